"""``moeopt check``: structure, constraints and metrics of a plan file, recomputed."""

from __future__ import annotations

from dataclasses import asdict

from optimizer.evaluate import evaluate
from optimizer.fileio import load_model
from optimizer.plan import PlanFile, plan_from_file
from optimizer.report import check_lines, memory_lines, metric_lines
from optimizer.schema import Instance

CLAIM_TOLERANCE = 0.01  # a stated figure "holds" within 1 % of the recomputed one


def compare_claims(stated: dict, computed: dict) -> list[dict]:
    """Each stated metric beside the recomputed one, with a verdict."""
    out = []
    for name, value in stated.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if name not in computed:
            out.append({"name": name, "stated": value, "computed": None, "verdict": "not derivable"})
            continue
        ref = computed[name]
        holds = abs(value - ref) <= CLAIM_TOLERANCE * max(abs(ref), 1e-9) or abs(value - ref) < 1e-9
        out.append({"name": name, "stated": value, "computed": ref,
                    "verdict": "holds" if holds else "does not hold"})
    return out


def check_plan_file(inst: Instance, path: str) -> tuple[dict, str, bool]:
    """(JSON document of the contract, readable text, feasible?) for the plan at ``path``."""
    pf = load_model(path, PlanFile, "plan")
    plan, checks = plan_from_file(inst, pf)
    if plan is None:
        doc = {"feasible": False, "checks": [asdict(c) for c in checks], "metrics": {}}
        text = "\n".join(["Structure"] + check_lines(checks) + ["plan is not valid"]) + "\n"
        return doc, text, False
    ev = evaluate(inst, plan)
    checks = checks + ev.checks
    metrics = ev.metrics()
    claims = compare_claims((pf.model_extra or {}).get("metrics") or {}, metrics)
    feasible = all(c.ok for c in checks)
    doc = {"feasible": feasible, "checks": [asdict(c) for c in checks], "metrics": metrics,
           "claims": claims}
    lines = ["Checks"] + check_lines(checks) + ["Memory per GPU"]
    lines += memory_lines(ev, inst.memory_limit_gb) + ["Metrics"] + metric_lines(ev)
    if claims:
        lines.append("Stated figures against recomputed ones")
        lines += [f"  {c['name']:<34} stated {c['stated']!s:<22} computed {c['computed']!s:<22} "
                  f"{c['verdict']}" for c in claims]
    lines.append("feasible: every constraint holds" if feasible else "INFEASIBLE: a constraint is violated")
    return doc, "\n".join(lines) + "\n", feasible
