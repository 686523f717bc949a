"""KV-cache pool per GPU as vLLM, SGLang and TensorRT-LLM size it from their memory fraction
(formulas.runtime_kv_pool_bytes). Hand figures: an H200 (141 GiB = 151,397,597,184 B), 84 GB
of weights, 6 GB of peak activations, 4.158 GB reserve."""

from __future__ import annotations

import pytest

from optimizer.costs import formulas as cm

CAP, W, ACT, RES = 151_397_597_184, 84e9, 6e9, 4.158e9


def test_vllm_subtracts_everything_from_its_share():
    # 0.9 * 151,397,597,184 = 136,257,837,465.6; - 84e9 - 6e9 - 4.158e9 = 42,099,837,465.6
    assert cm.runtime_kv_pool_bytes("vllm", CAP, W, ACT, RES) == pytest.approx(42_099_837_465.6)


def test_sglang_static_fraction_holds_weights_and_kv_only():
    # 0.88 * 151,397,597,184 = 133,229,885,521.92; - 84e9 = 49,229,885,521.92
    assert cm.runtime_kv_pool_bytes("sglang", CAP, W, ACT, RES) == pytest.approx(49_229_885_521.92)
    assert cm.runtime_kv_pool_bytes("sglang", CAP, W, ACT, RES, 0.8) == pytest.approx(0.8 * CAP - W)


def test_trtllm_takes_a_fraction_of_what_is_free():
    # free = 151,397,597,184 - 84e9 - 6e9 - 4.158e9 = 57,239,597,184; x 0.9 = 51,515,637,465.6
    assert cm.runtime_kv_pool_bytes("trtllm", CAP, W, ACT, RES) == pytest.approx(51_515_637_465.6)


def test_never_negative_and_unknown_runtime_refused():
    assert cm.runtime_kv_pool_bytes("sglang", CAP, 2 * CAP, ACT, RES) == 0.0
    with pytest.raises(ValueError, match="runtime 'tgi'"):
        cm.runtime_kv_pool_bytes("tgi", CAP, W, ACT, RES)


# ------------------------------------------------------- the planner's cap under a runtime's rule

def _memory(runtime, fraction=None):
    from optimizer.costs.serving.knobs import ReplicaMemory, RuntimePool
    # the hand figures above, as one GPU of a replica: 84 GB of weights, 2 GB of activations
    # at zero tokens plus 1 MB per step token (4 GB at C = 4,000), 4.158 GB of buffers and
    # reserve; 1 GB of KV per request; the memory limit is the whole GPU
    pool = None if runtime is None else RuntimePool(runtime, fraction, CAP, 84_000_000_000, 2_000_000_000,
                                                     4_158_000_000)
    return ReplicaMemory(84_000_000_000 + 4_158_000_000 + 2_000_000_000, 1_000_000_000, 1_000_000, CAP, pool)


def test_running_cap_is_held_to_the_runtimes_pool():
    from optimizer.costs.serving.knobs import largest_running_cap
    # no rule: (151,397,597,184 - 90,158,000,000 - 4,000,000,000) // 1e9 = 57
    assert largest_running_cap(_memory(None), 4000) == 57
    # vLLM 0.9: 136,257,837,465.6 - 84e9 - 6e9 - 4.158e9 = 42,099,837,465.6 -> 42
    assert largest_running_cap(_memory("vllm"), 4000) == 42
    # SGLang 0.88: 133,229,885,521.92 - 84e9 = 49,229,885,521.92 -> 49
    assert largest_running_cap(_memory("sglang"), 4000) == 49
    # SGLang at 0.95: 143,827,717,324.8 - 84e9 = 59.8 GB, above the memory limit's 57 -> 57
    assert largest_running_cap(_memory("sglang", 0.95), 4000) == 57
    # TensorRT-LLM 0.9 of the free 57,239,597,184 = 51,515,637,465.6 -> 51
    assert largest_running_cap(_memory("trtllm"), 4000) == 51


@pytest.mark.slow
def test_a_service_solved_under_a_rule_passes_check_and_a_plan_beyond_it_fails(tmp_path):
    """Qwen3-30B-A3B on 8 H200 under SGLang's default fraction: the cap the solve picks fits
    SGLang's pool (check recomputes it), and the plan solved without the rule (B = 256) is
    refused by check against the instance with the rule."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    doc = json.loads((repo / "instances" / "qwen3_30b_a3b_h200_service.json").read_text())
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(doc))
    doc["hardware"]["kv_pool_runtime"] = "sglang"
    ruled = tmp_path / "sglang.json"
    ruled.write_text(json.dumps(doc))
    cli = [sys.executable, "-m", "optimizer.cli"]
    for inst in (plain, ruled):
        done = subprocess.run(cli + ["solve", str(inst), "--format", "json", "--output",
                                     str(inst.with_suffix(".plan.json"))],
                              capture_output=True, text=True, timeout=900, cwd=repo)
        assert done.returncode == 0, done.stderr
    caps = {inst.stem: json.loads(inst.with_suffix(".plan.json").read_text())["serving"]["max_running_requests"]
            for inst in (plain, ruled)}
    assert caps["sglang"] < caps["plain"]
    ok = subprocess.run(cli + ["check", str(ruled), str(ruled.with_suffix(".plan.json")), "--format", "json"],
                        capture_output=True, text=True, timeout=900, cwd=repo)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    pool = next(c for c in json.loads(ok.stdout)["checks"] if c["name"] == "kv_pool_of_sglang")
    assert pool["ok"] and pool["value"] <= pool["limit"]
    bad = subprocess.run(cli + ["check", str(ruled), str(plain.with_suffix(".plan.json")), "--format", "json"],
                         capture_output=True, text=True, timeout=900, cwd=repo)
    assert bad.returncode == 3, bad.stdout + bad.stderr
    refused = next(c for c in json.loads(bad.stdout)["checks"] if c["name"] == "kv_pool_of_sglang")
    assert not refused["ok"] and refused["value"] > refused["limit"]
