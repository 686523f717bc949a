"""``moeopt solve --mode disagg|auto``, ``moeopt check`` of a disaggregated plan (recomputed
from the plan alone; tampered plans refused) and ``moeopt size`` (the fewest GPUs; one GPU
fewer is proven infeasible)."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import INSTANCE as BATCH_INSTANCE
from tests.cli.test_cli import expect, invoke
from tests.cpsat.test_disagg_model import tiny_disagg

SERVICE_KEYS = ("ttft_p50_s", "ttft_p90_s", "tpot_p50_ms", "tpot_p90_ms", "goodput_rps", "goodput_rps_per_gpu",
                "output_tokens_per_s_per_gpu", "tokens_per_s_per_user", "utilization")


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disagg")
    inst = tmp / "tiny.json"
    inst.write_text(json.dumps(tiny_disagg()))
    plan = tmp / "plan.json"
    res = expect(invoke("solve", inst, "--mode", "disagg", "--output", plan), 0)
    return inst, plan, json.loads(plan.read_text()), res.stdout


@pytest.mark.slow
def test_disagg_plan_file_and_text(solved):
    _, _, doc, text = solved
    assert doc["mode"] == "disagg" and [p["role"] for p in doc["pools"]] == ["prefill", "decode"]
    assert doc["num_gpus"] == sum(p["replicas"] * p["num_gpus"] for p in doc["pools"]) <= 8
    assert all(k in doc["metrics"] for k in SERVICE_KEYS)
    assert set(doc["transfer"]) >= {"link", "kv_bytes_per_request", "transfer_s"}
    # TTFT = the prefill replica's TTFT + the transfer (docs/plan-file.md)
    prefill = doc["pools"][0]["metrics"]
    assert doc["metrics"]["ttft_p90_s"] == pytest.approx(prefill["ttft_p90_s"] + doc["transfer"]["transfer_s"], rel=1e-12)
    # deployment goodput = the lesser pool's replicas x per-replica goodput
    pools = {p["role"]: p for p in doc["pools"]}
    assert doc["metrics"]["goodput_rps"] == pytest.approx(
        min(p["replicas"] * p["metrics"]["goodput_rps"] for p in pools.values()), rel=1e-12)
    assert "prefill pool:" in text and "decode pool:" in text and "KV transfer:" in text


@pytest.mark.slow
def test_check_recomputes_the_plan(solved):
    inst, plan, doc, _ = solved
    checked = json.loads(expect(invoke("check", inst, plan, "--format", "json"), 0).stdout)
    assert checked["feasible"]
    for key, value in doc["metrics"].items():
        assert checked["metrics"][key] == pytest.approx(value, rel=1e-12), key
    assert not [c for c in checked["claims"] if c["verdict"] != "holds"]


@pytest.mark.slow
def test_check_refuses_tampered_plans(solved, tmp_path):
    inst, _, doc, _ = solved
    bad = tmp_path / "bad.json"
    # a stated goodput the pools do not give: the claim does not hold
    lie = json.loads(json.dumps(doc))
    lie["metrics"]["goodput_rps"] *= 2
    bad.write_text(json.dumps(lie))
    res = json.loads(expect(invoke("check", inst, bad, "--format", "json"), 0).stdout)
    assert any(c["name"] == "goodput_rps" and c["verdict"] == "does not hold" for c in res["claims"])
    # a decode cap the KV cache cannot hold: the decode pool's memory check fails (exit 3)
    big = json.loads(json.dumps(doc))
    big["pools"][1]["serving"].update(max_running_requests=16384, prefill_chunk_tokens=16384)
    bad.write_text(json.dumps(big))
    res = json.loads(expect(invoke("check", inst, bad, "--format", "json"), 3).stdout)
    assert not next(c for c in res["checks"] if c["name"] == "decode: memory_per_gpu")["ok"]
    # at a rate just under the plan's goodput the plan holds; the binding pool one replica
    # short, or a rate just above the goodput, misses an SLO (exit 3)
    near = tiny_disagg()
    near["workload"]["arrival_rate_rps"] = 0.99 * doc["metrics"]["goodput_rps"]
    near_path = tmp_path / "near.json"
    near_path.write_text(json.dumps(near))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(doc))
    expect(invoke("check", near_path, plan, "--format", "json"), 0)
    binding = min(doc["pools"], key=lambda p: p["replicas"] * p["metrics"]["goodput_rps"])
    if binding["replicas"] > 1:
        few = json.loads(json.dumps(doc))
        pool = next(p for p in few["pools"] if p["role"] == binding["role"])
        pool["replicas"] -= 1
        few["num_gpus"] -= pool["num_gpus"]
        bad.write_text(json.dumps(few))
        res = json.loads(expect(invoke("check", near_path, bad, "--format", "json"), 3).stdout)
        assert not all(c["ok"] for c in res["checks"] if c["name"].startswith(("ttft", "tpot", "decode: slot")))
    near["workload"]["arrival_rate_rps"] = 1.01 * doc["metrics"]["goodput_rps"]
    near_path.write_text(json.dumps(near))
    expect(invoke("check", near_path, plan, "--format", "json"), 3)
    # a stated link the layout does not give
    link = json.loads(json.dumps(doc))
    link["transfer"]["link"] = "intra_node" if doc["transfer"]["link"] == "inter_node" else "inter_node"
    bad.write_text(json.dumps(link))
    res = json.loads(expect(invoke("check", inst, bad, "--format", "json"), 0).stdout)
    assert any(c["name"] == "transfer.link" and c["verdict"] == "does not hold" for c in res["claims"])


def test_disagg_on_a_static_batch_is_one_line_exit_2():
    res = expect(invoke("solve", BATCH_INSTANCE, "--mode", "disagg"), 2)
    assert "--mode=disagg" in res.stderr and "workload.kind='batch'" in res.stderr
    assert res.stderr.count("\n") == 1


@pytest.mark.slow
def test_auto_prints_both_and_writes_the_better(tmp_path):
    inst = tmp_path / "tiny.json"
    inst.write_text(json.dumps(tiny_disagg()))
    plan = tmp_path / "plan.json"
    res = expect(invoke("solve", inst, "--mode", "auto", "--output", plan), 0)
    lines = res.stdout.splitlines()
    agg = next(line for line in lines if line.startswith("agg   :"))
    dis = next(line for line in lines if line.startswith("disagg:"))
    per_gpu = [float(line.split(":")[1].split()[0]) for line in (agg, dis)]
    doc = json.loads(plan.read_text())
    chosen = "disagg" if per_gpu[1] > per_gpu[0] else "agg"
    assert doc["mode"] == chosen and f"chosen: {chosen}" in res.stdout
    assert doc["metrics"]["goodput_rps_per_gpu"] == pytest.approx(max(per_gpu), rel=1e-3)


@pytest.mark.slow
def test_size_answer_and_one_gpu_short_is_proven_infeasible(tmp_path):
    inst = tmp_path / "tiny.json"
    inst.write_text(json.dumps(tiny_disagg()))
    out = json.loads(expect(invoke("size", inst, "--rate", "200", "--gpus-allowed", "1-16", "--format", "json"),
                            0).stdout)
    assert set(out) >= {"rate_rps", "agg", "disagg"} and out["rate_rps"] == 200
    for mode in ("agg", "disagg"):
        entry = out[mode]
        assert entry["status"] == "optimal", entry
        n = entry["num_gpus"]
        assert entry["goodput_rps"] >= 200 and entry["plan"]["num_gpus"] == n
        short = invoke("size", inst, "--rate", "200", "--gpus-allowed", f"1-{n - 1}", "--mode", mode,
                       "--format", "json")
        expect(short, 3)
        refused = json.loads(short.stdout)
        assert refused[mode]["num_gpus"] is None and refused[mode]["status"] == "infeasible"
        assert "200 requests/s" in short.stderr and f"up to {n - 1} GPUs" in short.stderr


def test_size_usage_errors(tmp_path):
    inst = tmp_path / "tiny.json"
    inst.write_text(json.dumps(tiny_disagg()))
    assert "exactly one" in expect(invoke("size", inst), 2).stderr
    assert "--rate-range" in expect(invoke("size", inst, "--rate-range", "5:1:1"), 2).stderr
    assert "--gpus-allowed" in expect(invoke("size", inst, "--rate", "1", "--gpus-allowed", "x"), 2).stderr
    assert "workload.kind='batch'" in expect(invoke("size", BATCH_INSTANCE, "--rate", "1"), 2).stderr


@pytest.mark.slow
def test_python_api_solve_disagg_and_size(tmp_path):
    from optimizer.api import size, solve_disagg
    from optimizer.costs.serving.replica import service_load
    from optimizer.cpsat.disagg_solve import solver_dict
    from optimizer.inputs.schema import Instance
    from optimizer.plan.check import check_service_plan_file
    from optimizer.plan.pools import disagg_plan_to_json
    inst = Instance.model_validate(tiny_disagg())
    result = solve_disagg(inst, time_limit_s=60)
    doc = disagg_plan_to_json(inst.name, result.evaluation, result.status, solver_dict(result))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    checked, _, ok = check_service_plan_file(inst, str(path), service_load(inst.workload))
    assert ok and checked["metrics"] == doc["metrics"]
    rows = size(inst, [200.0], gpus_allowed=list(range(1, 17)))
    assert rows[0]["rate_rps"] == 200.0 and rows[0]["disagg"]["num_gpus"] == rows[0]["disagg"]["plan"]["num_gpus"]


def test_a_disaggregated_plan_against_a_static_batch_is_one_line_exit_2(tmp_path):
    from tests.plan.test_pools import _doc
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_doc()))
    res = expect(invoke("check", BATCH_INSTANCE, plan), 2)
    assert "pools: a disaggregated plan is checked against a service instance" in res.stderr
    assert res.stderr.count("\n") == 1
