"""The disaggregated simulator (prefill pool -> KV transfer -> decode pool) against values
worked by hand: a test-double step time with deterministic arrivals, the documented relation
to an aggregated plan of the same configuration, and the KV transfer of an MLA and a GQA
model on an intra- and an inter-node link."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from optimizer.cli.main import main
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.inputs.service import Requests
from optimizer.simulate.deployment import BOTH, DECODE, PREFILL, Deployment, Knobs, deployment
from optimizer.simulate.disagg import disagg_deployment, transfer_of
from optimizer.simulate.engine import simulate, simulate_disagg
from optimizer.simulate.summary import pool_summary, summarize
from tests.simulate.test_simulate import CONTRACT_KEYS, tiny_doc

MS = 1_000_000  # ns


class AffineTimer:
    """Test double of ``StepTimer``: a step of p prompt tokens and d decodes takes
    1 ms + 0.01 ms * p + 0.1 ms * d (micro-batches ignored: every knob here is 1)."""

    def batch(self, chunks, decode_contexts):
        return sum(n for _, n, _ in chunks), len(decode_contexts)

    def ns(self, batch, micro_batches=1):
        p, d = batch
        return 0 if p + d == 0 else MS + 10_000 * p + 100_000 * d


def pool(role: str, cap: int, chunk: int = 100, queues: int = 1, kv_tokens: int = 10**6) -> Deployment:
    return Deployment(queues, queues, Knobs(cap, chunk, 1, 1), kv_tokens, AffineTimer(), None, role)


def constant_transfer(_prompt_tokens: int) -> int:
    return 3 * MS


def requests(prompts, outputs, arrivals_ms) -> Requests:
    return Requests(np.array(prompts), np.array(outputs), np.array(arrivals_ms, dtype=float) / 1e3)


@pytest.mark.parametrize("decode_cap, finish_ms", [(2, [9.4, 9.4, 25.9]), (1, [9.2, 11.4, 25.9])])
def test_disagg_by_hand_with_a_test_double_step(decode_cap, finish_ms):
    """Prefill C = 100, B = 4; transfer 3 ms; decode B = decode_cap. A (150 prompt, 3 out)
    and B (50, 3) at 0 ms, C (80, 2) at 20 ms.
    Prefill: step 1 [0, 2]: A's first 100 tokens (1 + 0.01*100 = 2 ms); step 2 [2, 4]: A's
    last 50 + B's 50 (2 ms): both prompts done at 4 ms, transferred by 7 ms = first token,
    TTFT 7 ms each. C: one step of 80 tokens [20, 21.8] (1.8 ms), +3 = 24.8: TTFT 4.8 ms.
    Decode, cap 2: A and B decode together, 1 + 0.1*2 = 1.2 ms a step: tokens 2 and 3 at
    8.2 and 9.4 ms; TPOT (9.4 - 7) / 2 = 1.2 ms. Cap 1: A alone, 1.1 ms a step: done at
    9.2; B waits for the slot, then 9.2 -> 10.3 -> 11.4: TPOT (11.4 - 7) / 2 = 2.2 ms (the
    wait counts in TPOT, as documented). C: one decode step, 24.8 + 1.1 = 25.9 ms."""
    reqs = requests([150, 50, 80], [3, 3, 2], [0, 0, 20])
    out = simulate_disagg(pool(PREFILL, 4), pool(DECODE, decode_cap), constant_transfer, reqs)
    assert (out.first_token_ns - out.arrival_ns).tolist() == [7 * MS, 7 * MS, 4_800_000]
    assert out.finish_ns.tolist() == [round(t * MS) for t in finish_ms]
    assert out.transfer_ns.tolist() == [3 * MS] * 3
    # steps: prefill 3; decode 2 + 1 (cap 2) or 2 + 2 + 1 (cap 1)
    assert [p.steps for p in out.pools] == [3, 3 if decode_cap == 2 else 5]
    # utilisation while the requests arrive ([0, 20] ms): prefill busy 4 of 20 ms; decode
    # steps inside it: 2 x 1.2 ms with 2 requests (cap 2) or 4 x 1.1 ms with 1 (cap 1)
    prefill, decode = (pool_summary(out, stats, 0.0, cap) for stats, cap in zip(out.pools, (4, decode_cap)))
    assert prefill["utilization"] == prefill["busy_fraction"] == pytest.approx(4 / 20, rel=1e-12)
    running = 2 * 2.4 / 20 if decode_cap == 2 else 4.4 / 20
    assert decode["mean_running_per_queue"] == pytest.approx(running, rel=1e-12)
    assert decode["utilization"] == pytest.approx(running / decode_cap, rel=1e-12)
    summary = summarize(out, Instance.model_validate(tiny_doc()).requirements, 0.0)
    tpots = sorted([(finish_ms[0] - 7) / 2, (finish_ms[1] - 7) / 2, 25.9 - 24.8])
    assert summary["tpot_p90_ms"] == pytest.approx(tpots[-1], rel=1e-12)  # nearest rank of 3
    assert summary["ttft_p50_s"] == pytest.approx(7e-3, rel=1e-12)


def test_prefill_slot_is_held_until_the_transfer_ends():
    """Prefill cap 1: A (150 tokens) runs [0, 2] (100 tokens) and [2, 3.5] (its last 50:
    1 + 0.5 ms); its slot is taken while its KV is sent, so B (50 tokens, at 0) is admitted
    only at 3.5 + 3 = 6.5 ms: [6.5, 8.0], first token at 11.0 ms."""
    reqs = requests([150, 50], [1, 1], [0, 0])
    out = simulate_disagg(pool(PREFILL, 1), pool(DECODE, 4), constant_transfer, reqs)
    assert out.first_token_ns.tolist() == [6_500_000, 11 * MS]
    assert out.finish_ns.tolist() == out.first_token_ns.tolist()  # one output token: done on arrival


def test_prefill_kv_held_by_a_transfer_makes_the_next_prompt_wait():
    """Prefill KV of 160 tokens (10 blocks of 16), budget 200: A (150 tokens, 10 blocks) runs
    [0, 2.5] (1 + 1.5 ms); B (50 tokens, 4 blocks) does not fit beside it, and A's blocks stay
    until its transfer ends at 5.5 ms (the queue waits; nothing is preempted). B then runs
    [5.5, 7.0] (1 + 0.5 ms): first token at 10.0 ms."""
    reqs = requests([150, 50], [1, 1], [0, 0])
    out = simulate_disagg(pool(PREFILL, 4, chunk=200, kv_tokens=160), pool(DECODE, 4), constant_transfer, reqs)
    assert out.first_token_ns.tolist() == [5_500_000, 10 * MS]
    assert out.preemptions == 0 and out.pools[0].peak_kv_fraction == 1.0


def test_decode_kv_pressure_preempts_and_recomputes_on_the_decode_queue():
    """Decode KV of 64 tokens (4 blocks); A and B (16 prompt, 20 out) at 0 ms. Prefill: one
    step of 32 tokens (1.32 ms) + 3 ms transfer: both reach the decode queue at 4.32 ms, 2
    blocks each (17 tokens with the first decode slot). 16 steps of 2 decodes (1.2 ms) give
    tokens 2..17 (contexts up to 32 = 2 blocks each) -> 23.52 ms. The next needs a third
    block for A: B (newest) is preempted, and its recompute (16 + 17 = 33 tokens, 3 blocks)
    does not fit beside A, so A decodes alone 3 steps (1.1 ms): done at 26.82 ms. B is then
    prefilled again on the decode queue (33 tokens: 1.33 ms -> token 18 at 28.15) and decodes
    tokens 19 and 20 (2 x 1.1 ms): done at 30.35 ms; its first token stays at 4.32 ms."""
    reqs = requests([16, 16], [20, 20], [0, 0])
    out = simulate_disagg(pool(PREFILL, 4), pool(DECODE, 4, kv_tokens=64), constant_transfer, reqs)
    assert out.first_token_ns.tolist() == [4_320_000, 4_320_000]
    assert out.finish_ns.tolist() == [26_820_000, 30_350_000]
    assert (out.pools[0].preemptions, out.pools[1].preemptions) == (0, 1)
    assert out.pools[1].steps == 16 + 3 + 1 + 2


def test_least_loaded_routing_in_each_pool():
    """Two prefill queues and two decode queues; four requests of (10, 2) at 0 ms: the
    prefill router alternates (fewest outstanding, lowest index on ties): queues 0, 1, 0, 1.
    The transfers end together, in the order their steps ended and, within a step, of its
    chunks: requests 0, 2 (queue 0), then 1, 3; the decode router alternates over that
    order: 0 -> 0, 2 -> 1, 1 -> 0, 3 -> 1."""
    reqs = requests([10] * 4, [2] * 4, [0] * 4)
    out = simulate_disagg(pool(PREFILL, 4, queues=2), pool(DECODE, 4, queues=2), constant_transfer, reqs)
    assert out.replica.tolist() == [0, 1, 0, 1] and out.decode_replica.tolist() == [0, 0, 1, 1]
    # each prefill queue: one step of 20 tokens (1.2 ms); +3 ms; each decode queue one step of 2
    assert (out.first_token_ns == 4_200_000).all() and (out.finish_ns == 5_400_000).all()


# ---------------------------------------------------------------- same configuration as aggregated
def tiny_disagg_doc(prefill_replicas: int = 1, decode_replicas: int = 1, cap: int = 8, chunk: int = 32) -> dict:
    replica = {"degrees": {"tp": 1, "pp": 1, "dp": 1, "ep": 1, "etp": 1, "edp": 1}, "num_gpus": 1,
               "serving": {"max_running_requests": cap, "prefill_chunk_tokens": chunk,
                           "prefill_micro_batches": 1, "decode_micro_batches": 1}}
    return {"schema_version": 1, "instance": "tiny", "status": "feasible", "mode": "disagg",
            "num_gpus": prefill_replicas + decode_replicas,
            "pools": [{"role": "prefill", "replicas": prefill_replicas, **copy.deepcopy(replica)},
                      {"role": "decode", "replicas": decode_replicas, **copy.deepcopy(replica)}]}


def test_disagg_of_the_aggregated_configuration_adds_only_the_transfer():
    """Each pool is the aggregated 1-GPU plan (cap 8, budget 32). With requests 1 s apart
    every one finds both pools idle, so (docs/simulator.md) its prefill steps are the
    aggregated replica's, its decode steps too (contexts 101..104, one request each), and
    the transfer is added to TTFT only: 2 layers x 100 tokens x 256 B (4 KV heads x 16 x
    K,V x 2 B) = 51,200 B over 1 link of 100 GB/s + 5 us = 512 + 5,000 = 5,512 ns."""
    inst = Instance.model_validate(tiny_doc(num_gpus=2))
    agg = deployment(inst, {"degrees": {"tp": 1}, "serving": {"max_running_requests": 8,
                                                              "prefill_chunk_tokens": 32}}, {})
    dis = disagg_deployment(inst, tiny_disagg_doc(), {})
    assert dis.transfer.ns(100) == 5_512 and dis.transfer.link == "intra_node"
    reqs = requests([100] * 5, [5] * 5, [1000, 2000, 3000, 4000, 5000])
    a = simulate(agg, reqs)
    d = simulate_disagg(dis.prefill, dis.decode, dis.transfer.ns, reqs)
    assert ((d.first_token_ns - d.arrival_ns) == (a.first_token_ns - a.arrival_ns) + 5_512).all()
    assert ((d.finish_ns - d.first_token_ns) == (a.finish_ns - a.first_token_ns)).all()
    assert d.pools[0].busy[0][:, 2].max() == 1 and d.pools[1].busy[0][:, 2].max() == 1


def test_disagg_prompt_only_burst_matches_the_aggregated_prefill():
    """400 prompt-only requests (64 tokens, 1 output) at 0, budget 256, cap 8: the
    aggregated replica finishes 4 per step at k x step (k = 1..100); the prefill pool runs
    the same steps (the 4 requests it is sending hold 4 of the 8 slots for 5.83 us, less than
    a step), and each request is done when its transfer ends: k x step + 64 x 2 x 256 B /
    100 GB/s + 5 us = k x step + 5,328 ns."""
    inst = Instance.model_validate(tiny_doc(num_gpus=2))
    agg = deployment(inst, {"degrees": {"tp": 1}, "serving": {"max_running_requests": 8,
                                                              "prefill_chunk_tokens": 256}}, {})
    dis = disagg_deployment(inst, tiny_disagg_doc(cap=8, chunk=256), {})
    burst = requests([64] * 400, [1] * 400, [0] * 400)
    a, d = simulate(agg, burst), simulate_disagg(dis.prefill, dis.decode, dis.transfer.ns, burst)
    assert dis.transfer.ns(64) == 5_328
    assert (d.finish_ns == a.finish_ns + 5_328).all() and d.pools[1].steps == 0


# ---------------------------------------------------------------- KV transfer by hand
@pytest.mark.parametrize("path, prefill_gpus, decode_gpus, total, link, expected_ns", [
    # DeepSeek-V3 (MLA, FP8 KV): 61 layers x 4,000 tokens x (512 + 64) x 1 B = 140,544,000 B.
    # one node (4 + 4 GPUs): 4 links x 450 GB/s: 78,080 ns + 5 us = 83,080 ns
    ("instances/deepseek_v3_fp8_h200_service.json", 4, 4, 8, "intra_node", 83_080),
    # two nodes (8 + 8): 8 links x 50 GB/s: 351,360 ns + 10 us = 361,360 ns
    ("instances/deepseek_v3_fp8_h200_service.json", 8, 8, 16, "inter_node", 361_360),
    # Qwen3-30B-A3B (GQA, 4 KV heads x 128 x K,V x 2 B = 2,048 B): 48 x 4,000 x 2,048 =
    # 393,216,000 B. one node (2 + 4 GPUs, min 2 links): 436,906.67 + 5,000 -> 441,907 ns (up)
    ("instances/qwen3_30b_a3b_h200_service.json", 2, 4, 8, "intra_node", 441_907),
    # two nodes (8 + 8): 8 x 50 GB/s: 983,040 + 10,000 = 993,040 ns
    ("instances/qwen3_30b_a3b_h200_service.json", 8, 8, 16, "inter_node", 993_040),
])
def test_kv_transfer_by_hand(path, prefill_gpus, decode_gpus, total, link, expected_ns):
    inst = load_model(path, Instance, "instance")
    hw = inst.hardware  # the preset's figures the arithmetic above uses
    assert (hw.intra_node_bandwidth_gb_s, hw.inter_node_bandwidth_gb_s) == (450.0, 50.0)
    assert (hw.intra_node_latency_us, hw.inter_node_latency_us, hw.gpus_per_node) == (5.0, 10.0, 8)
    t = transfer_of(inst, prefill_gpus, decode_gpus, total)
    assert t.link == link and t.links == min(prefill_gpus, decode_gpus)
    assert t.kv_bytes(4000) == {61: 140_544_000, 48: 393_216_000}[inst.model.num_layers]
    assert t.ns(4000) == expected_ns


def test_sliding_layers_send_at_most_their_window():
    """Layers 0 and 2 slide over 16 tokens (layer_types), 1 and 3 are full: a 100-token
    prompt sends 2 x 100 + 2 x 16 = 232 token-layers x 256 B = 59,392 B."""
    doc = tiny_doc()
    doc["model"] |= {"num_layers": 4, "sliding_window": 16,
                     "layer_types": ["sliding", "full"] * 2}
    t = transfer_of(Instance.model_validate(doc), 1, 1, 2)
    assert t.kv_bytes(100) == 232 * 256 and t.kv_bytes(10) == 40 * 256


# ---------------------------------------------------------------- command line
def test_cli_simulates_a_disagg_plan(tmp_path: Path):
    (tmp_path / "inst.json").write_text(json.dumps(tiny_doc(num_gpus=3)))
    (tmp_path / "plan.json").write_text(json.dumps(tiny_disagg_doc(prefill_replicas=1, decode_replicas=2)))
    out = tmp_path / "sim.json"
    res = CliRunner().invoke(main, ["simulate", str(tmp_path / "inst.json"), str(tmp_path / "plan.json"),
                                    "--requests", "200", "--format", "json", "--output", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert CONTRACT_KEYS <= set(doc) and doc["requests"] == 180 and doc["mode"] == "disagg"
    assert (doc["pools"]["prefill"]["queues"], doc["pools"]["decode"]["queues"], doc["num_gpus"]) == (1, 2, 3)
    assert 0 < doc["pools"]["prefill"]["utilization"] < 1 and doc["transfer"]["link"] == "intra_node"
    assert doc["peak_kv_fraction"] == max(doc["pools"][r]["peak_kv_fraction"] for r in ("prefill", "decode"))
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["pools"].pop(), "pools: must be a list of 2 objects"),
    (lambda d: d["pools"][1].update(role="prefill"), "a second prefill pool"),
    (lambda d: d.update(num_gpus=7), "num_gpus=7: the pools use 2 GPUs"),
    (lambda d: d["pools"][0]["serving"].update(max_running_requests=64),
     "prefill_chunk_tokens=32 < max_running_requests=64"),
])
def test_cli_bad_disagg_plan_is_one_line_exit_2(tmp_path: Path, mutate, expected):
    plan = tiny_disagg_doc()
    mutate(plan)
    (tmp_path / "inst.json").write_text(json.dumps(tiny_doc(num_gpus=2)))
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    res = CliRunner().invoke(main, ["simulate", str(tmp_path / "inst.json"), str(tmp_path / "plan.json"),
                                    "--output", str(tmp_path / "o.json")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and expected in lines[0], res.output
    assert not (tmp_path / "o.json").exists()


def test_roles_are_checked():
    with pytest.raises(ValueError):
        simulate(pool(PREFILL, 4), requests([10], [2], [0]))
    with pytest.raises(ValueError):
        simulate_disagg(pool(BOTH, 4), pool(DECODE, 4), constant_transfer, requests([10], [2], [0]))


def test_first_tokens_do_not_depend_on_the_decode_pool():
    """The prefill pool never waits on the decode pool (a transfer is a pure delay and frees
    the prefill slot when it ends), so every request's first token comes at the same time
    when it has one output token (it leaves at the end of its transfer) as when it has many
    and a decode pool short of slots and KV queues it: benchmarks/bench_disagg_agreement.py
    reads TTFT from long prefill-only runs on this ground. Poisson arrivals on 3 prefill
    queues (C = 100, B = 4) under load, a decode pool of 1 queue, B = 2, 40 tokens of KV."""
    rng = np.random.default_rng(7)
    n = 400
    prompts = rng.integers(20, 180, n)
    arrivals_ms = np.cumsum(rng.exponential(1.2, n))
    many = requests(prompts, rng.integers(2, 60, n), arrivals_ms)
    one = requests(prompts, np.ones(n, dtype=np.int64), arrivals_ms)
    prefill, decode = pool(PREFILL, 4, queues=3), pool(DECODE, 2, kv_tokens=400)
    full = simulate_disagg(prefill, decode, constant_transfer, many)
    alone = simulate_disagg(prefill, decode, constant_transfer, one)
    assert not full.rejected.any() and full.pools[1].preemptions > 0  # the decode pool is squeezed
    assert (full.finish_ns - full.first_token_ns).max() > 50 * MS  # and long lived
    np.testing.assert_array_equal(full.first_token_ns, alone.first_token_ns)
    np.testing.assert_array_equal(alone.finish_ns, alone.first_token_ns)
