"""Claims a plan makes about itself, each set beside moeopt's own figure with a verdict.

A plan file may carry ``"claims": [{"name", "stated", "relation", "text"}]`` (relation:
``approx`` within ``tolerance``, default 10 %; ``at_most``; ``at_least``), and moeopt's own
plans carry their ``metrics`` (checked as ``approx`` within 1e-9). Verdicts: "holds",
"does not hold", "not derivable" (moeopt computes no such figure).
"""

from __future__ import annotations

from optimizer.costs import physical_bounds as bounds
from optimizer.costs.units import LOAD_SCALE, bytes_to_gb, ns_to_s
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Evaluation, Plan
from optimizer.plan.files import printable

DEFAULT_TOLERANCE = 0.10


def derived_figures(inst: Instance, plan: Plan, ev: Evaluation) -> dict[str, float]:
    """Every figure a claim may be compared with (units in the names)."""
    d, m = plan.deg, inst.model
    worst = max(ev.stage_memory, key=lambda s: s.total)
    pre = ev.costs.prefill
    layer_sum_ns = sum(pre.layer_dense_ns) + sum(pre.moe_ns(x) for x in ev.hot_loads)
    per_layer_ns = d.micro_batches * layer_sum_ns / max(1, m.num_layers)
    figures = dict(ev.metrics())
    figures.update({
        "num_gpus": d.num_gpus,
        "weights_gb": bytes_to_gb(worst.weights),
        "kv_cache_gb": bytes_to_gb(worst.kv_cache),
        "activations_gb": bytes_to_gb(worst.activations),
        "buffers_gb": bytes_to_gb(worst.buffers),
        "memory_utilization": worst.total / (inst.hardware.gpu.memory_gb * 1e9),
        "mfu": bounds.batch_flops(inst) / (d.num_gpus * inst.hardware.gpu.peak_tflops * 1e12
                                           * ns_to_s(ev.makespan_ns)),
        "per_layer_latency_s": per_layer_ns / 1e9,
        "batch_time_s": ns_to_s(ev.makespan_ns),
        "communication_fraction": ev.communication_ns / ev.makespan_ns,
        "experts_per_gpu": m.num_experts / d.ep / d.etp,
        "whole_experts_per_gpu": m.num_experts / d.ep if d.etp == 1 else 0.0,
        "attention_heads_per_gpu": m.num_attention_heads / d.tp,
        "hidden_per_gpu": m.hidden_size / d.tp,
        "hot_rank_load_share": max(ev.hot_loads) / LOAD_SCALE,
    })
    return figures


def verdict(stated: float, computed: float | None, relation: str, tolerance: float) -> str:
    """'holds', 'does not hold' or 'not derivable' for one claim."""
    if computed is None:
        return "not derivable"
    if relation == "at_most":
        ok = computed <= stated
    elif relation == "at_least":
        ok = computed >= stated
    else:
        ok = abs(computed - stated) <= tolerance * max(abs(computed), abs(stated), 1e-12)
    return "holds" if ok else "does not hold"


def judge_claims(claims: list[dict], figures: dict[str, float], extra: dict | None = None) -> list[dict]:
    """Each claim with moeopt's figure and a verdict; ``extra`` supplies lazily computed
    figures by name (callables), e.g. the smallest GPU count meeting the requirements."""
    out = []
    for claim in claims:
        if not isinstance(claim, dict):
            continue  # not a claim (as claims without a name or a number are skipped)
        name = claim.get("name")
        stated = claim.get("stated")
        if not isinstance(name, str) or _number(stated) is None:
            continue
        computed = figures.get(name)
        if computed is None and extra and name in extra:
            computed = extra[name]()
        relation = claim.get("relation", "approx")
        relation = relation if isinstance(relation, str) else "approx"
        tol = _number(claim.get("tolerance", DEFAULT_TOLERANCE))
        tol = DEFAULT_TOLERANCE if tol is None else tol
        text, note = claim.get("text", name), claim.get("note", "")
        out.append({"name": name, "text": printable(text if isinstance(text, str) else name),
                    "stated": stated,
                    "computed": computed, "relation": relation,
                    "verdict": verdict(float(stated), computed, relation, tol),
                    "note": printable(note) if isinstance(note, str) else ""})
    return out


def _number(value) -> float | None:
    """``value`` as a float when it is a JSON number a float can hold, else None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond 1e308
        return None


def metric_claims(metrics: dict) -> list[dict]:
    """A plan's own stated metrics as exact claims (moeopt's plans must reproduce)."""
    return [{"name": k, "stated": v, "relation": "approx", "tolerance": 1e-9, "text": f"metrics.{k}"}
            for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


# ----------------------------------------------------------------------------------------------
# Figures a plan file states outside ``metrics`` and ``claims``: status, instance, memory.
# Each gets a verdict; only those that do not hold are listed (a plan whose statements all hold
# prints exactly what it printed before these verdicts existed).

STATUSES = ("optimal", "feasible", "infeasible", "unknown")
MEMORY_PARTS = ("weights", "kv_cache", "activations", "buffers", "total")
MEMORY_TOLERANCE = 1e-9        # moeopt writes these figures itself: they must reproduce


def _stated(name: str, text: str, stated, computed, note: str) -> dict:
    return {"name": name, "text": text, "stated": stated, "computed": computed,
            "relation": "approx", "verdict": "does not hold", "note": note}


def status_claim(status: str | None, feasible: bool) -> list[dict]:
    """A verdict on the plan's ``status`` when it is false: an unknown value, "optimal" or
    "feasible" on a plan that violates a constraint, "infeasible" on one that meets them all.
    Optimality itself is not re-proved (that needs the solver)."""
    computed = "feasible" if feasible else "infeasible"
    if status is None or status == "unknown":
        return []
    if status not in STATUSES:
        return [_stated("status", "status", status, computed,
                        f"not one of {', '.join(STATUSES)}")]
    if (status in ("optimal", "feasible")) != feasible:
        return [_stated("status", "status", status, computed,
                        "a constraint is violated" if not feasible else "every constraint holds")]
    return []


def instance_claim(stated: str | None, checked: str) -> list[dict]:
    """A verdict when the plan names another instance than the one it is checked against."""
    if stated is None or stated == checked:
        return []
    return [_stated("instance", "instance", stated, checked,
                    "the plan names another instance than the one checked")]


def memory_claims(stated: dict[int, dict], computed: dict[int, dict]) -> list[dict]:
    """Per memory part one verdict over all GPUs that state it (``rank -> {part: GB}``), listed
    when some GPU's figure differs from moeopt's: the first such GPU and how many."""
    out = []
    for part in MEMORY_PARTS:
        ranks = sorted(r for r, m in stated.items() if part in m)
        wrong = [r for r in ranks
                 if abs(stated[r][part] - computed[r][part])
                 > MEMORY_TOLERANCE * max(abs(stated[r][part]), abs(computed[r][part]), 1e-12)]
        if wrong:
            r = wrong[0]
            out.append(_stated(f"memory_gb.{part}",
                               f"memory_gb.{part}: {len(wrong)}/{len(ranks)} GPUs, rank {r}",
                               stated[r][part], computed[r][part],
                               f"{len(wrong)} of {len(ranks)} GPUs state another figure"))
    return out
