"""Planning a service end to end on a tiny instance: CP-SAT's choice equals brute force over
every (configuration, knob tuple), and the command line writes a plan that ``moeopt check``
recomputes and rejects when tampered with."""

import json

import pytest

from optimizer.costs.serving.replica import service_degrees, service_load
from optimizer.costs.serving.search import search
from optimizer.cpsat.service_solve import placements, solve_service
from optimizer.inputs.schema import Instance
from optimizer.plan.service import service_slo
from tests.cli.test_cli import INSTANCE as BATCH_INSTANCE
from tests.cli.test_cli import expect, invoke
from tests.oracles.tiny_service import TINY, TINY_SERVICE_GROUP, every_candidate

# a time limit no solve of these tests reaches even on a loaded machine (an "optimal" they
# assert must not turn "feasible" because the machine is busy; CI allows 90 minutes)
UNREACHED_LIMIT_S = 3600.0


def _scores(c, order):
    return tuple(getattr(c, f"{name}_score") for name in order)


@pytest.mark.parametrize("objective", ["goodput", "throughput"])
@pytest.mark.slow
@pytest.mark.xdist_group(TINY_SERVICE_GROUP)
def test_optimum_equals_brute_force(objective):
    inst = Instance.model_validate(TINY)
    result = solve_service(inst, objective=objective, time_limit_s=UNREACHED_LIMIT_S)
    every = [c for _, c in every_candidate(4)[1]]
    order = [objective, "throughput" if objective == "goodput" else "goodput"]
    allowed = [c for c in every if c.meets_rate]
    assert len(every) > 50 and 0 < len(allowed) < len(every)
    assert result.status == "optimal"
    assert _scores(result.chosen, order) == max(_scores(c, order) for c in allowed)


@pytest.mark.slow
def test_cli_solve_check_and_tamper(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    plan = tmp_path / "plan.json"
    res = expect(invoke("solve", path, "--output", plan), 0)
    assert "per replica: max_running_requests" in res.stdout
    doc = json.loads(plan.read_text())
    assert doc["solver"]["objective_name"] == "goodput"
    for key in ("ttft_p50_s", "ttft_p90_s", "tpot_p50_ms", "tpot_p90_ms", "goodput_rps",
                "goodput_rps_per_gpu", "output_tokens_per_s_per_gpu", "tokens_per_s_per_user",
                "utilization"):
        assert key in doc["metrics"]
    checked = json.loads(expect(invoke("check", path, plan, "--format", "json"), 0).stdout)
    assert checked["metrics"]["goodput_rps"] == pytest.approx(doc["metrics"]["goodput_rps"], rel=1e-12)
    # a cap the KV cache cannot hold fails the memory check (exit 3)
    doc["serving"]["max_running_requests"] = doc["serving"]["prefill_chunk_tokens"] = 16384
    plan.write_text(json.dumps(doc))
    failed = json.loads(expect(invoke("check", path, plan, "--format", "json"), 3).stdout)
    assert not next(c for c in failed["checks"] if c["name"] == "memory_per_gpu")["ok"]


def test_cli_objective_rules(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    res = expect(invoke("solve", path, "--objective", "lost-time"), 2)
    assert "--objective=lost-time" in res.stderr
    batch = expect(invoke("solve", BATCH_INSTANCE, "--objective", "goodput"), 2)
    assert "--objective=goodput" in batch.stderr


@pytest.mark.parametrize("name", ["10b_moe_service", "deepseek_v3_fp8_h200_service",
                                  "qwen3_30b_a3b_h200_service", "mixtral_8x7b_bf16_h100_service"])
def test_shipped_service_instances(name):
    """The shipped services load as services with the brief's lengths and p90 targets, and
    ``moeopt inspect`` reads them (the KV of one request at its mean lengths)."""
    from pathlib import Path

    from optimizer.inputs.files import load_model
    path = Path(__file__).resolve().parents[2] / "instances" / f"{name}.json"
    inst = load_model(path, Instance, "instance")
    assert inst.workload.kind == "service" and inst.requirements.percentile == 90
    assert inst.requirements.max_tpot_ms == 50.0
    if name != "10b_moe_service":
        assert (inst.workload.prompt_tokens, inst.workload.output_tokens) == (4000, 1000)
        assert inst.requirements.max_ttft_s == 2.0
    doc = json.loads(expect(invoke("inspect", path, "--format", "json"), 0).stdout)
    assert doc["batch_sequences"] is None and doc["output_tokens"] == inst.workload.output_tokens


@pytest.mark.parametrize("command", ["place", "report"])
def test_batch_commands_refuse_a_service(tmp_path, command):
    """Commands of static batches say so in one line (exit 2) when given a service (``sweep``
    takes services: tests/search/test_service_front.py)."""
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"degrees": {"tp": 1, "pp": 1, "dp": 4, "ep": 4}}))
    args = {"place": ["place", path, "--ep", "4"],
            "report": ["report", plan, "--instance", path, "--output", tmp_path / "r.html"]}[command]
    res = expect(invoke(*args), 2)
    assert res.stderr.startswith("moeopt: workload.kind='service'") and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_export_of_a_service_needs_the_plans_serving_block(tmp_path):
    """Exports take service plans (their launch settings come from the plan's ``serving``
    block), so a service plan without that block is refused in one line (exit 2), nothing written."""
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"degrees": {"tp": 1, "pp": 1, "dp": 4, "ep": 4}}))
    out = tmp_path / "ex"
    res = expect(invoke("export", plan, "--instance", path, "--to", "vllm", "--output", out), 2)
    assert res.stderr.startswith("moeopt: serving: a service plan needs its serving block")
    assert len(res.stderr.splitlines()) == 1
    assert not out.exists()


def test_out_of_time_stops_the_search_after_one_group():
    # a deadline already passed: the first group (the best prefill estimate) is evaluated, the
    # others are counted unvisited, and their candidates are exactly that group's
    from optimizer.costs.serving.candidates import evaluate_group
    from optimizer.costs.serving.search import prepared_groups
    inst = Instance.model_validate(TINY)
    load, slo = service_load(inst.workload), service_slo(inst)
    loads, ranks = placements(inst, list({d.ep for d in service_degrees(inst, 4)}))
    groups, _ = prepared_groups(inst, 4, load, loads, ranks)
    found = search(inst, 4, load, slo, 20.0, loads, ranks, out_of_time=lambda: True)
    assert found.unvisited == len(groups) - 1 > 0
    deg, group, rep = groups[0]
    want = evaluate_group(deg, group, rep, load, slo, 20.0)
    assert [(c.deg, c.knobs, c.goodput_rps) for c in found.candidates] == \
        [(c.deg, c.knobs, c.goodput_rps) for c in want]


def test_time_limit_bounds_the_service_search(monkeypatch):
    # the budget's clock jumps 1000 s after the deadline is set: the search stops after one
    # group and the plan is "feasible", with a note saying why
    from optimizer.cpsat import budget
    times = iter([0.0] + [1000.0] * 10**6)
    monkeypatch.setattr(budget, "clock", lambda: next(times))
    result = solve_service(Instance.model_validate(TINY), time_limit_s=5)
    assert result.status == "feasible" and result.searched.unvisited > 0
    assert any("time limit (5 s) ran out" in note for note in result.notes)


def test_no_time_for_cp_sat_is_not_infeasible(monkeypatch):
    # CP-SAT stopped before any solution (UNKNOWN): the choice is the best allowed candidate
    # by enumeration (the same one CP-SAT proves with time), the plan "feasible", never exit 3
    from ortools.sat.python import cp_model

    from optimizer.cpsat import service_model
    inst = Instance.model_validate(TINY)
    proven = solve_service(inst, time_limit_s=UNREACHED_LIMIT_S)

    class NoTime(cp_model.CpSolver):
        def solve(self, model, *args):
            return cp_model.UNKNOWN
    monkeypatch.setattr(service_model.cp_model, "CpSolver", NoTime)
    result = solve_service(inst, time_limit_s=UNREACHED_LIMIT_S)
    assert result.status == "feasible" and result.choice.phases[0].status == "unknown"
    assert _scores(result.chosen, ["goodput", "throughput"]) == _scores(proven.chosen, ["goodput", "throughput"])
    assert any("by enumeration" in note for note in result.notes)
