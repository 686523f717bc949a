"""``moeopt check``: structure, constraints and metrics of a plan file, recomputed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from optimizer.plan.audit import derived_figures, judge_claims, metric_claims
from optimizer.plan.evaluate import evaluate
from optimizer.inputs.files import load_model
from optimizer.plan.files import PlanFile, plan_from_file
from optimizer.output.text import check_lines, memory_lines, metric_lines
from optimizer.inputs.schema import Instance

def check_plan_file(inst: Instance, path: str,
                    smallest_gpu_count: Callable[[Instance], int | None] | None = None) -> tuple[dict, str, bool]:
    """(JSON document of the contract, readable text, feasible?) for the plan at ``path``.
    ``smallest_gpu_count`` answers the claim "N GPUs are needed" (a solver search, passed in so
    that checking a plan never loads the solver unless a claim asks for it); without it that
    claim is "not derivable"."""
    pf = load_model(path, PlanFile, "plan")
    plan, checks = plan_from_file(inst, pf)
    if plan is None:
        doc = {"feasible": False, "checks": [asdict(c) for c in checks], "metrics": {}}
        text = "\n".join(["Structure"] + check_lines(checks) + ["plan is not valid"]) + "\n"
        return doc, text, False
    ev = evaluate(inst, plan)
    checks = checks + ev.checks
    metrics = ev.metrics()
    extra = pf.model_extra or {}
    metrics_in, claims_in = extra.get("metrics"), extra.get("claims")  # kept, not trusted: any JSON
    stated = (metric_claims(metrics_in if isinstance(metrics_in, dict) else {})
              + (list(claims_in) if isinstance(claims_in, list) else []))
    claims = judge_claims(stated, derived_figures(inst, plan, ev),
                          {"num_gpus_needed": lambda: smallest_gpu_count(inst) if smallest_gpu_count else None})
    feasible = all(c.ok for c in checks)
    doc = {"feasible": feasible, "checks": [asdict(c) for c in checks], "metrics": metrics,
           "claims": claims}
    lines = ["Checks"] + check_lines(checks) + ["Memory per GPU"]
    lines += memory_lines(ev, inst.memory_limit_gb) + ["Metrics"] + metric_lines(ev)
    if claims:
        lines += ["Claims against moeopt's figures"] + claim_lines(claims)
    lines.append("feasible: every constraint holds" if feasible else "INFEASIBLE: a constraint is violated")
    return doc, "\n".join(lines) + "\n", feasible


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def claim_lines(claims: list[dict]) -> list[str]:
    """One line per claim: what was said, the stated and computed figures, the verdict."""
    sign = {"approx": "~", "at_most": "<=", "at_least": ">="}
    return [f"  {c['text'][:46]:<46} {sign.get(c['relation'], '~'):>2} {_fmt(c['stated']):>10}   "
            f"moeopt {_fmt(c['computed']):>10}   {c['verdict']}" for c in claims]
