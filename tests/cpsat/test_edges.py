"""Numbers at the edges: a 1-million-parameter model and a 2-trillion-parameter one, on 1
GPU, a few GPUs and 4,096 GPUs.

Every cost is an integer (ns, bytes, parts of LOAD_SCALE) and CP-SAT rejects a model whose
linear expressions may overflow int64 (MODEL_INVALID). Here every CP-SAT model a solve
builds is validated before it runs (an empty ``CpModel.validate()``), the solve ends with
exit 0 and a plan that ``check`` accepts, or exit 3 naming the requirement that rules it
out, or exit 4, within the ``--time-limit`` given; and an instance whose times would not
fit 64-bit integers at all (a 1 MFLOP/s GPU) is refused with one line (exit 2), never a
crash.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import pytest

from optimizer.cpsat import explain as explain_mod
from optimizer.cpsat import search as search_mod
from tests.oracles import fuzzkit

REPO = Path(__file__).resolve().parents[2]
SEED = json.loads((REPO / "instances" / "10b_moe.json").read_text())
DEEPSEEK = json.loads((REPO / "instances" / "deepseek_v3_fp8_h100.json").read_text())
# Reading, evaluating and writing the plan on a busy 2-core machine: generous, since the
# bound only shows that the command ends near its limit (tests/cpsat/test_interrupt.py checks
# the sharing of the deadline exactly, with a fake clock).
STARTUP_S = 15.0
H100_GB = 80 * 2**30 / 1e9  # the h100-sxm preset's 80 GiB, in GB


def tiny(gpus: int) -> dict:
    """About 1.0 million parameters (2 layers, width 64, 4 experts, 6,600-token vocabulary)."""
    doc = copy.deepcopy(SEED)
    doc["name"] = f"tiny_1m_{gpus}"
    doc["model"].update(name="1M MoE", num_layers=2, hidden_size=64, num_attention_heads=4, num_kv_heads=4,
                        head_dim=16, num_experts=4, top_k=1, expert_ffn_size=128, vocab_size=6600)
    doc["hardware"]["num_gpus"] = gpus
    doc["workload"].update(batch_sequences=8192, prompt_tokens=128)  # 8,192 sequences: DP can reach 4,096
    doc["requirements"] = {"max_ttft_s": 10}
    return doc


def giant(gpus: int) -> dict:
    """About 2.06 trillion parameters: DeepSeek-V3 (FP8, MLA, 61 layers) with 800 experts."""
    doc = copy.deepcopy(DEEPSEEK)
    doc["name"] = f"giant_2t_{gpus}"
    doc["model"].update(name="2T MoE", num_experts=800)
    doc["hardware"]["num_gpus"] = gpus
    return doc


@pytest.fixture
def validated(monkeypatch):
    """Every CP-SAT model the solve runs must pass CP-SAT's own validation (no overflow)."""
    real = search_mod.run_search
    seen = []

    def validating(solver, model, budget=None):
        problem = model.validate()
        assert problem == "", f"CP-SAT rejects the model: {problem[:300]}"
        seen.append(len(model.proto.variables))
        return real(solver, model, budget)

    monkeypatch.setattr(search_mod, "run_search", validating)  # every phase (run_phase)
    monkeypatch.setattr(explain_mod, "run_search", validating)  # conflict cores
    return seen


def solve_cli(doc: dict, folder: Path, limit: float):
    path = folder / f"{doc['name']}.json"
    path.write_text(json.dumps(doc))
    start = time.monotonic()
    out = fuzzkit.invoke(["solve", str(path), "--time-limit", str(limit), "--format", "json",
                          "--output", str(folder / "plan.json")], folder)
    return path, out, time.monotonic() - start


def test_parameter_counts(tmp_path):
    for doc, low, high in ((tiny(1), 0.95e6, 1.1e6), (giant(1), 2.0e12, 2.1e12)):
        path = tmp_path / "m.json"
        path.write_text(json.dumps(doc))
        out = fuzzkit.invoke(["inspect", str(path), "--format", "json"], tmp_path)
        assert out.code == 0, out.stderr
        assert low <= json.loads(out.stdout)["total_params"] <= high


# (instance, GPUs, time limit, allowed exit codes)
CASES = [
    pytest.param(tiny, 1, 10, (0,), id="1M-on-1-GPU"),
    pytest.param(tiny, 8, 10, (0,), id="1M-on-8-GPUs"),
    pytest.param(tiny, 4096, 20, (0, 4), id="1M-on-4096-GPUs"),
    pytest.param(giant, 1, 10, (3,), id="2T-on-1-GPU"),
    pytest.param(giant, 64, 20, (0, 4), id="2T-on-64-GPUs"),
    pytest.param(giant, 4096, 20, (0, 4), id="2T-on-4096-GPUs"),
]


@pytest.mark.parametrize("make, gpus, limit, codes", CASES)
@pytest.mark.slow
def test_solve_at_the_edges(make, gpus, limit, codes, tmp_path, validated):
    doc = make(gpus)
    path, out, wall = solve_cli(doc, tmp_path, limit)
    assert out.code in codes, f"exit {out.code}: {out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr
    assert wall < limit * 1.1 + 1 + STARTUP_S, f"{wall:.1f} s for --time-limit {limit}"
    result = json.loads(out.stdout)
    if out.code == 3:
        assert result["status"] == "infeasible"
        assert "memory" in result["conflicts"]
        assert "GB per GPU" in result["explanation"]
        assert result["bounds"]["min_memory_per_gpu_gb"] > H100_GB
        return
    if out.code == 4:
        assert result["status"] == "unknown"
        assert "time limit" in result["explanation"]
        return
    assert validated, "no CP-SAT model was solved"
    assert result["status"] in ("optimal", "feasible")
    assert result["num_gpus"] == gpus
    d = result["degrees"]
    assert d["tp"] * d["pp"] * d["dp"] == gpus == d["etp"] * d["ep"] * d["edp"] * d["pp"]
    metrics = result["metrics"]
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert metrics["throughput_tokens_per_ms"] > 0 and metrics["ttft_s"] > 0
    assert metrics["max_memory_gb"] <= (H100_GB if make is giant else 64)
    assert result["solver"]["gap"] is not None and 0 <= result["solver"]["gap"] <= 1
    assert len(result["gpus"]) == gpus
    inst = fuzzkit.invoke(["check", str(path), str(tmp_path / "plan.json"), "--format", "json"], tmp_path)
    assert inst.code == 0, inst.stdout[-2000:]


def test_infeasible_requirement_on_4096_gpus_is_reported_as_such(tmp_path, validated):
    """A TTFT no cluster can reach: exit 3 naming TTFT and the compute bound."""
    doc = tiny(4096)
    doc["requirements"] = {"max_ttft_s": 1e-6}
    _, out, _ = solve_cli(doc, tmp_path, 20)
    assert out.code == 3, out.stderr
    result = json.loads(out.stdout)
    assert result["conflicts"] == ["ttft"]
    assert "out of reach" in result["explanation"]


@pytest.mark.parametrize("field, value", [("peak_tflops", 1e-6), ("hbm_bandwidth_gb_s", 1e-6)])
def test_times_beyond_64_bit_integers_are_refused_in_one_line(field, value, tmp_path):
    """A GPU of 1 MFLOP/s (or 1 kB/s of HBM) with a 10^14-token batch: stage times of 1e16 s
    do not fit CP-SAT's integers in ns. Exit 2, one line naming the fields, no crash."""
    doc = tiny(8)
    doc["requirements"] = {}
    doc["hardware"]["gpu"].update({field: value, "memory_gb": 1e9})
    doc["workload"].update(batch_sequences=10**7, prompt_tokens=10**7, output_tokens=10**7)
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(doc))
    for command in (["solve", str(path), "--time-limit", "10", "--output", str(tmp_path / "p.json")],
                    ["pareto", str(path), "--time-limit", "10"]):
        out = fuzzkit.invoke(command, tmp_path)
        case = fuzzkit.Case(command[0], command, [], [str(path)])
        assert out.code == 2, fuzzkit.describe(case, out)
        assert not fuzzkit.violations(case, out), fuzzkit.describe(case, out)
        assert "64-bit integer range" in out.stderr and "hardware.gpu.peak_tflops" in out.stderr
