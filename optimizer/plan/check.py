"""``moeopt check``: structure, constraints and metrics of a plan file, recomputed. A plan with
redundant expert slots is evaluated with them: a replicated expert's load split evenly over its
replicas, and the replicas' weights added to each GPU's memory (``plan.replicas``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace

from pydantic import ValidationError

from optimizer.costs.serving.metrics import ServiceLoad
from optimizer.costs.units import bytes_to_gb
from optimizer.errors import InputError
from optimizer.inputs.files import load_model, read_json, validation_message
from optimizer.inputs.schema import Instance
from optimizer.plan.audit import (
    derived_figures,
    instance_claim,
    judge_claims,
    memory_claims,
    metric_claims,
    status_claim,
)
from optimizer.plan.evaluate import Check, Evaluation, Plan, evaluate
from optimizer.plan.files import PlanFile, check_structure
from optimizer.plan.lines import check_lines, memory_lines, metric_lines
from optimizer.plan.pools import ROLES, DisaggEvaluation, PoolPlan, disagg_checks, evaluate_disagg, is_disagg, read_pools
from optimizer.plan.replicas import with_replica_weights
from optimizer.plan.service import check_line, check_service_plan, service_plan_from_file


def check_plan_file(inst: Instance, path: str,
                    smallest_gpu_count: Callable[[Instance], int | None] | None = None) -> tuple[dict, str, bool]:
    """(JSON document of the contract, readable text, feasible?) for the plan at ``path``.
    ``smallest_gpu_count`` answers the claim "N GPUs are needed" (a solver search, passed in so
    that checking a plan never loads the solver unless a claim asks for it); without it that
    claim is "not derivable"."""
    if is_disagg(read_json(path, "plan")):
        raise InputError(f"plan {path}: pools: a disaggregated plan is checked against a service "
                         f"instance (workload.kind 'service'), not a static batch")
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


def check_service_plan_file(inst: Instance, path: str, load: ServiceLoad) -> tuple[dict, str, bool]:
    """(document, text, feasible?) of the plan at ``path`` against a service instance: a
    disaggregated plan (``pools``) by ``check_disagg_plan``, an aggregated one by
    ``plan.service.check_service_plan``."""
    doc = read_json(path, "plan")
    if is_disagg(doc):
        return check_disagg_plan(inst, doc, load, str(path))
    try:
        pf = PlanFile.model_validate(doc)
    except ValidationError as exc:
        raise InputError(validation_message(f"plan {path}", exc)) from None
    return check_service_plan(inst, pf, load)


# ----------------------------------------------------------------------------------------------
# ``moeopt check`` of a disaggregated plan


def _stated_figures(doc: dict) -> dict[str, object]:
    """Every figure the plan states about itself, by name: ``metrics.*``,
    ``pools[role].metrics.*``, ``transfer.*``."""
    out: dict[str, object] = {}
    for key, value in (doc.get("metrics") or {}).items():
        out[key] = value
    for pool in doc.get("pools") or []:
        if isinstance(pool, dict) and isinstance(pool.get("metrics"), dict):
            out.update({f"{pool.get('role')}.{k}": v for k, v in pool["metrics"].items()})
    transfer = doc.get("transfer")
    if isinstance(transfer, dict):
        out.update({f"transfer.{k}": v for k, v in transfer.items() if k != "link"})
    return out


def _figures(ev: DisaggEvaluation) -> dict[str, float]:
    out: dict[str, float] = dict(ev.metrics())
    for role in ROLES:
        out.update({f"{role}.{k}": v for k, v in ev.pool_metrics(role).items()})
    out.update({f"transfer.{k}": v for k, v in ev.transfer_doc().items() if k != "link"})
    return out


def check_disagg_plan(inst: Instance, doc: dict, load: ServiceLoad, source: str = "(in memory)"
                      ) -> tuple[dict, str, bool]:
    """(document, text, feasible?) of a disaggregated plan: each pool's structure and knob
    rules, then both pools, the transfer and the SLOs recomputed from the plan alone; the
    figures the plan states get verdicts (``claims``). A plan that cannot be read as pools
    (``read_pools``) is an InputError (exit 2)."""
    pools = read_pools(doc, inst, source, cap_gpus=False)
    checks: list[Check] = []
    plans: dict[str, PoolPlan] = {}
    for pool in pools:
        plan, knobs, rules = service_plan_from_file(inst, pool.file)
        checks += [replace(c, name=f"{pool.role}: {c.name}") for c in rules]
        if plan is not None:
            plans[pool.role] = PoolPlan(pool.role, plan, knobs, pool.replicas)
    if len(plans) < len(ROLES):
        out = {"feasible": False, "checks": [asdict(c) for c in checks], "metrics": {}}
        lines = ["Structure"] + [check_line(c) for c in checks] + ["plan is not valid"]
        return out, "\n".join(lines) + "\n", False
    ev = evaluate_disagg(inst, load, plans["prefill"], plans["decode"])
    checks += disagg_checks(inst, ev)
    feasible = all(c.ok for c in checks)
    metrics = ev.metrics()
    claims = judge_claims(metric_claims(_stated_figures(doc)), _figures(ev))
    transfer = doc.get("transfer")
    if isinstance(transfer, dict) and "link" in transfer and transfer["link"] != ev.transfer.link:
        claims.append({"name": "transfer.link", "text": "transfer.link", "stated": str(transfer["link"])[:40],
                       "computed": ev.transfer.link, "relation": "approx", "verdict": "does not hold",
                       "note": "the pools' layout gives another link"})
    claims += status_claim(doc.get("status") if isinstance(doc.get("status"), str) else None, feasible)
    claims += instance_claim(doc.get("instance") if isinstance(doc.get("instance"), str) else None, inst.name)
    out = {"feasible": feasible, "checks": [asdict(c) for c in checks], "metrics": metrics,
           "pools": {role: ev.pool_metrics(role) for role in ROLES}, "transfer": ev.transfer_doc(),
           "claims": claims}
    lines = ["Checks"] + [check_line(c) for c in checks] + ["Metrics"]
    lines += [f"  {k:<34} {v:.6g}" for k, v in metrics.items()]
    for role in ROLES:
        pool = plans[role]
        d = pool.plan.deg
        lines.append(f"{role} pool: {pool.replicas} x {d.num_gpus} GPUs (tp {d.tp} pp {d.pp} dp {d.dp} "
                     f"ep {d.ep} etp {d.etp})")
        lines += [f"  {k:<34} {v:.6g}" for k, v in ev.pool_metrics(role).items()]
    lines.append(f"transfer: {ev.transfer.link} over {ev.transfer.links} links, "
                 f"{ev.kv_bytes_per_request / 1e9:.4g} GB per request, {ev.transfer_s * 1e3:.4g} ms")
    wrong = [c for c in claims if c["verdict"] == "does not hold"]
    if wrong:
        lines.append("Stated figures that do not hold")
        lines += [f"  {c['text'][:46]:<46} stated {c['stated']}  moeopt {c['computed']}" for c in wrong]
    lines.append("feasible: every constraint holds" if feasible else "INFEASIBLE: a constraint is violated")
    return out, "\n".join(lines) + "\n", feasible
