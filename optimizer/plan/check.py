"""``moeopt check``: structure, constraints and metrics of a plan file, recomputed. A plan with
redundant expert slots is evaluated with them: a replicated expert's load split evenly over its
replicas, and the replicas' weights added to each GPU's memory (``plan.replicas``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from optimizer.costs.units import bytes_to_gb
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.output.text import check_lines, memory_lines, metric_lines
from optimizer.plan.audit import (
    derived_figures,
    instance_claim,
    judge_claims,
    memory_claims,
    metric_claims,
    status_claim,
)
from optimizer.plan.evaluate import Evaluation, Plan, evaluate
from optimizer.plan.files import PlanFile, check_structure
from optimizer.plan.replicas import with_replica_weights


def check_plan_file(inst: Instance, path: str,
                    smallest_gpu_count: Callable[[Instance], int | None] | None = None) -> tuple[dict, str, bool]:
    """(JSON document of the contract, readable text, feasible?) for the plan at ``path``.
    ``smallest_gpu_count`` answers the claim "N GPUs are needed" (a solver search, passed in so
    that checking a plan never loads the solver unless a claim asks for it); without it that
    claim is "not derivable"."""
    pf = load_model(path, PlanFile, "plan")
    plan, checks, problems = check_structure(inst, pf, str(path), replicas=True)
    if plan is None:
        claims = status_claim(pf.status, False) + instance_claim(pf.instance, inst.name)
        doc = {"feasible": False, "checks": [asdict(c) for c in checks], "metrics": {}}
        if problems:
            doc["problems"] = [{"rule": p.rule, "message": p.message} for p in problems]
        if claims:
            doc["claims"] = claims
        lines = ["Structure"] + check_lines(checks) + [f"  why: {p.message}" for p in problems]
        if claims:
            lines += ["Claims against moeopt's figures"] + claim_lines(claims)
        return doc, "\n".join(lines + ["plan is not valid"]) + "\n", False
    ev = with_replica_weights(inst, plan, evaluate(inst, plan))   # hot loads: replicas share
    checks = checks + ev.checks
    metrics = ev.metrics()
    feasible = all(c.ok for c in checks)
    extra = pf.model_extra or {}
    claims_in = extra.get("claims")  # kept, not trusted: any JSON
    stated = (metric_claims(pf.metrics or {})
              + (list(claims_in) if isinstance(claims_in, list) else []))
    claims = judge_claims(stated, derived_figures(inst, plan, ev),
                          {"num_gpus_needed": lambda: smallest_gpu_count(inst) if smallest_gpu_count else None})
    claims += (status_claim(pf.status, feasible) + instance_claim(pf.instance, inst.name)
               + memory_claims(_stated_memory(pf), _computed_memory(plan, ev)))
    doc = {"feasible": feasible, "checks": [asdict(c) for c in checks], "metrics": metrics,
           "claims": claims}
    lines = ["Checks"] + check_lines(checks) + ["Memory per GPU"]
    lines += memory_lines(ev, inst.memory_limit_gb) + ["Metrics"] + metric_lines(ev)
    if claims:
        lines += ["Claims against moeopt's figures"] + claim_lines(claims)
    lines.append("feasible: every constraint holds" if feasible else "INFEASIBLE: a constraint is violated")
    return doc, "\n".join(lines) + "\n", feasible


def _stated_memory(pf: PlanFile) -> dict[int, dict]:
    return {g.rank: g.memory_gb.model_dump(exclude_none=True) for g in pf.gpus or []
            if g.memory_gb is not None}


def _computed_memory(plan: Plan, ev: Evaluation) -> dict[int, dict]:
    """rank -> GB per part, as the plan writer states them."""
    out = {}
    for s in plan.slots:
        m = ev.stage_memory[s.stage]
        out[s.rank] = {"weights": bytes_to_gb(m.weights), "kv_cache": bytes_to_gb(m.kv_cache),
                       "activations": bytes_to_gb(m.activations), "buffers": bytes_to_gb(m.buffers),
                       "total": bytes_to_gb(m.total)}
    return out


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def claim_lines(claims: list[dict]) -> list[str]:
    """One line per claim: what was said, the stated and computed figures, the verdict."""
    sign = {"approx": "~", "at_most": "<=", "at_least": ">="}
    return [f"  {c['text'][:46]:<46} {sign.get(c['relation'], '~'):>2} {_fmt(c['stated']):>10}   "
            f"moeopt {_fmt(c['computed']):>10}   {c['verdict']}" for c in claims]
