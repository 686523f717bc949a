"""Service workloads in the schema, trace readers and request generation."""

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from optimizer.errors import InputError
from optimizer.inputs.files import load_model, validation_message
from optimizer.inputs.schema import Instance
from optimizer.inputs.service import load_trace, make_requests
from optimizer.inputs.traces import read_trace

INSTANCES = Path(__file__).resolve().parents[2] / "instances"
BASE = json.loads((INSTANCES / "10b_moe.json").read_text())


def service(**workload) -> Instance:
    return Instance.model_validate({**BASE, "workload": {"kind": "service", **workload}})


def error_line(**workload) -> str:
    with pytest.raises(ValidationError) as info:
        service(**workload)
    return validation_message("instance x.json", info.value)


@pytest.mark.parametrize("name", sorted(p.name for p in INSTANCES.glob("*.json")
                                        if p.name != "seed_plan.json" and not p.name.endswith("_service.json")))
def test_shipped_instances_load_as_batches_and_dump_as_before(name):
    """kind defaults to batch and is left out of dumps, so are absent service requirements:
    the dump has exactly the keys of the file's sections as before."""
    inst = load_model(INSTANCES / name, Instance, "instance")
    assert inst.workload.kind == "batch"
    dumped = json.loads(inst.model_dump_json())
    assert "kind" not in dumped["workload"]
    assert set(dumped["requirements"]) == {"min_throughput_tokens_per_ms", "throughput_scope",
                                           "max_ttft_s", "max_tpot_ms", "max_memory_gb"}
    assert inst.requirements.percentile == 90


def test_service_round_trips_and_defaults():
    inst = service(arrival_rate_rps=4.0, prompt_tokens=512,
                   output_tokens={"kind": "lognormal", "mean_tokens": 200, "sigma": 0.5})
    again = Instance.model_validate_json(inst.model_dump_json())
    assert again == inst and again.workload.kind == "service"
    req = Instance.model_validate({**BASE, "requirements": {"latency_percentile": 99,
                                                            "min_goodput_rps": 2.5}}).requirements
    assert (req.percentile, req.min_goodput_rps) == (99, 2.5)


@pytest.mark.parametrize("workload, expected", [
    ({"arrival_rate_rps": 1.0, "prompt_tokens": -5, "output_tokens": 3},
     "workload.prompt_tokens=-5: Input should be greater than 0"),
    ({"arrival_rate_rps": 1.0, "prompt_tokens": 5, "output_tokens": {"kind": "zipf"}},
     "workload.output_tokens=dict: kind='zipf': expected one of "
     "uniform, lognormal, exponential"),
    ({"arrival_rate_rps": 1.0, "prompt_tokens": 5,
      "output_tokens": {"kind": "uniform", "min_tokens": 9, "max_tokens": 3}},
     "min_tokens=9 exceeds max_tokens=3"),
    ({"arrival_rate_rps": -1.0, "prompt_tokens": 5, "output_tokens": 5},
     "workload.arrival_rate_rps=-1.0: Input should be greater than 0"),
    ({"prompt_tokens": 5, "output_tokens": 5}, "needs arrival_rate_rps, concurrency or a trace"),
    ({"arrival_rate_rps": 1.0, "prompt_tokens": 5}, "output_tokens is missing"),
    ({"arrival_rate_rps": 1.0, "concurrency": 3, "prompt_tokens": 5, "output_tokens": 5},
     "not both"),
    ({"trace": "t.csv", "prompt_tokens": 5}, "a trace gives the lengths"),
])
def test_bad_service_fields_are_one_line(workload, expected):
    line = error_line(**workload)
    assert "\n" not in line and expected in line and line.startswith("instance x.json: workload")


def test_unknown_workload_kind():
    with pytest.raises(ValidationError) as info:
        Instance.model_validate({**BASE, "workload": {"kind": "stream"}})
    assert "kind='stream': expected 'batch' or 'service'" in validation_message("i", info.value)


def test_csv_and_jsonl_traces_read_alike(tmp_path):
    (tmp_path / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,10,2\n0.5,20,3\n0.5,7,1\n")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"arrival_s": 0, "prompt_tokens": 10, "output_tokens": 2},
        {"arrival_s": 0.5, "prompt_tokens": 20, "output_tokens": 3},
        {"arrival_s": 0.5, "prompt_tokens": 7, "output_tokens": 1}]) + "\n")
    for name in ("t.csv", "t.jsonl"):
        trace = read_trace(tmp_path / name)
        assert trace.arrival_s.tolist() == [0, 0.5, 0.5]
        assert trace.prompt_tokens.tolist() == [10, 20, 7]
        assert trace.output_tokens.tolist() == [2, 3, 1]


@pytest.mark.parametrize("text, expected", [
    ("arrival_s,prompt_tokens,output_tokens\n0,10,2\n1,-4,3\n", "row 3: prompt_tokens=-4: must be between 1"),
    ("arrival_s,prompt_tokens,output_tokens\n2,10,2\n1,4,3\n", "row 3: arrival_s=1 is before the previous"),
    ("", "no rows: a trace needs at least one request"),
    ("arrival_s,prompt_tokens,output_tokens\n", "no rows"),
    ("time,prompt_tokens,output_tokens\n0,1,1\n", "header='time,prompt_tokens,output_tokens'"),
    ("arrival_s,prompt_tokens,output_tokens\n0,1.5,1\n", "prompt_tokens='1.5': must be an integer"),
    ("arrival_s,prompt_tokens,output_tokens\nnan,1,1\n", "arrival_s='nan': must be a finite"),
    ("arrival_s,prompt_tokens,output_tokens\n0,1,0\n", "output_tokens=0: must be between 1"),
])
def test_bad_traces_are_one_line(tmp_path, text, expected):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(InputError) as info:
        read_trace(tmp_path / "bad.csv")
    message = str(info.value)
    assert "\n" not in message and message.startswith("workload.trace ") and expected in message


def test_trace_path_is_relative_to_the_instance(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n3,10,2\n5,20,3\n")
    inst = service(trace="traces/t.csv", arrival_rate_rps=4.0)
    trace = load_trace(inst.workload, tmp_path / "inst.json")
    reqs = make_requests(inst.workload, 10, seed=0, trace=trace)
    # shifted to 0 and scaled to 4 requests/s: (2 - 1) / 4 = 0.25 s apart
    assert reqs.arrival_s.tolist() == [0.0, 0.25] and reqs.prompt_tokens.tolist() == [10, 20]


def test_poisson_requests_match_their_distributions():
    """20,000 draws: mean gap 1/rate and mean lengths within 5 standard errors."""
    inst = service(arrival_rate_rps=8.0, prompt_tokens={"kind": "uniform", "min_tokens": 100,
                                                         "max_tokens": 300},
                   output_tokens={"kind": "exponential", "mean_tokens": 50})
    reqs = make_requests(inst.workload, 20_000, seed=3)
    gaps = np.diff(np.concatenate([[0.0], reqs.arrival_s]))
    assert abs(gaps.mean() - 0.125) < 5 * 0.125 / np.sqrt(20_000)
    assert reqs.prompt_tokens.min() >= 100 and reqs.prompt_tokens.max() <= 300
    assert abs(reqs.prompt_tokens.mean() - 200) < 5 * 58 / np.sqrt(20_000)  # sd of U{100..300} ~ 58
    assert abs(reqs.output_tokens.mean() - 50) < 5 * 50 / np.sqrt(20_000) + 0.5  # +0.5: rounding, clip at 1
    again = make_requests(inst.workload, 20_000, seed=3)
    assert np.array_equal(again.arrival_s, reqs.arrival_s)


def test_committed_traces_are_what_the_generator_makes():
    """instances/make_traces.py --check: the three CSV files are reproduced byte for byte,
    and each reads back as 4,000 sorted requests."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, str(INSTANCES / "make_traces.py"), "--check"],
                         capture_output=True, text=True, cwd=INSTANCES.parent)
    assert res.returncode == 0, res.stderr
    for name in ("chat", "summarise", "code"):
        trace = read_trace(INSTANCES / "traces" / f"{name}.csv")
        assert len(trace) == 4000 and (np.diff(trace.arrival_s) >= 0).all()


def test_example_service_instance_loads_with_its_trace():
    path = INSTANCES / "traces" / "qwen3_chat_service.json"
    inst = load_model(path, Instance, "instance")
    assert inst.workload.kind == "service" and len(load_trace(inst.workload, path)) == 4000
