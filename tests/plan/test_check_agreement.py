"""Solved plans written to disk and re-read by ``moeopt check`` reproduce every metric exactly."""

import json
from pathlib import Path

import pytest

from optimizer.cpsat.solve import solve
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.plan.check import check_plan_file
from optimizer.plan.files import plan_from_doc, plan_to_json

INSTANCE = Path(__file__).resolve().parents[2] / "instances" / "10b_moe.json"


@pytest.fixture(scope="module")
def inst() -> Instance:
    """The 10b_moe instance as shipped (power-law expert load)."""
    return load_model(INSTANCE, Instance, "instance")


def write(path, doc: dict) -> str:
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("num_gpus", [None, 8, 16])
def test_solved_plan_checks_feasible_with_same_metrics(inst, tmp_path, num_gpus):
    """Solve, write the plan, check it: feasible, optimal, and the same metrics to the bit."""
    result = solve(inst, num_gpus=num_gpus)
    assert result.status == "optimal"
    doc = plan_to_json(result.plan, result.evaluation, result.status, {})
    path = write(tmp_path / "plan.json", doc)

    checked, text, feasible = check_plan_file(inst, path)

    assert feasible and checked["feasible"], text
    assert all(c["ok"] for c in checked["checks"]), text
    stated = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))["metrics"]
    assert checked["metrics"] == stated
    assert checked["metrics"] == result.evaluation.metrics()
    assert all(c["verdict"] == "holds" for c in checked["claims"])
    assert doc["num_gpus"] == (num_gpus or inst.hardware.num_gpus)
    # the reader export and report use gives back exactly the solver's plan
    read = plan_from_doc(json.loads((tmp_path / "plan.json").read_text()), inst).to_plan()
    assert (read.deg, read.stages, read.slots) == (result.plan.deg, result.plan.stages, result.plan.slots)
    assert read.placement == {layer: tuple(tuple(sorted(r)) for r in ranks)
                              for layer, ranks in result.plan.placement.items()}


def test_memory_violation_is_reported_infeasible(inst, tmp_path):
    """The 10b model on 2 GPUs (TP 1, PP 1, DP 2) needs ~200 GB per GPU: the memory check fails."""
    # per GPU: weights 19.85 GB + KV 64 sequences * 10,240 * 262,144 B = 171.8 GB + ...
    plan = {"instance": "10b_moe", "num_gpus": 2, "micro_batches": 1,
            "degrees": {"tp": 1, "pp": 1, "dp": 2, "ep": 1, "etp": 1, "edp": 2}}
    path = write(tmp_path / "two_gpus.json", plan)

    checked, text, feasible = check_plan_file(inst, path)

    assert not feasible and not checked["feasible"]
    by_name = {c["name"]: c for c in checked["checks"]}
    assert not by_name["memory_per_gpu"]["ok"]
    assert by_name["memory_per_gpu"]["value"] > 190.0
    failed = {name for name, c in by_name.items() if not c["ok"]}
    assert "memory_per_gpu" in failed and "INFEASIBLE" in text
    assert "claims" not in checked or not checked["claims"]   # it states nothing


def test_false_status_does_not_hold(inst, tmp_path):
    """The same 2-GPU plan saying "optimal": the status verdict is "does not hold"."""
    plan = {"instance": "10b_moe", "status": "optimal",
            "degrees": {"tp": 1, "pp": 1, "dp": 2, "ep": 1}}
    checked, text, feasible = check_plan_file(inst, write(tmp_path / "p.json", plan))
    assert not feasible
    assert [(c["name"], c["stated"], c["computed"], c["verdict"]) for c in checked["claims"]] == [
        ("status", "optimal", "infeasible", "does not hold")]
    assert "does not hold" in text
