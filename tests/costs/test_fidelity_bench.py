"""The fidelity benchmark's pieces that decide what is compared: aiconfigurator op names ->
moeopt's operator groups, the DeepEP timing lookup used to align the MoE communication, and
Kendall's tau."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks import aic_predict
from benchmarks.bench_fidelity import kendall_tau, worst


def test_op_groups():
    names = {"context_moe_pre_dispatch": "moe_comm", "context_moe_post_dispatch": "moe_comm",
             "context_moe": "routed_experts", "generation_moe_overlap": "moe+comm",
             "context_add_norm_1": "elementwise", "context_shared_act_gate": "elementwise",
             "context_attention": "attention", "context_mla_block": "attention",
             "context_qkv_gemm": "linear", "context_router_gemm": "linear",
             "generation_logits_gemm": "lm_head", "context_embedding": "embedding",
             "context_p2p": "p2p"}
    assert {n: aic_predict.group(n) for n in names} == names


def test_kendall_tau_and_worst_by_hand():
    # 4 items, pairs (6): concordant 5, discordant 1 -> (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    assert worst([0.9, 1.3, 0.6]) == 0.6  # 1/0.6 = 1.67 beats 1.3


@pytest.mark.skipif(importlib.util.find_spec("aiconfigurator_core") is None,
                    reason="aiconfigurator-core (optional extra calibrate) not installed")
def test_deepep_lookup_hits_measured_points_and_interpolates():
    from pathlib import Path

    import aiconfigurator_core
    import pandas as pd
    root = Path(aiconfigurator_core.__file__).parent / "systems" / "data" / "h100_sxm" / "comm" / "sglang"
    df = pd.concat([pd.read_parquet(f) for f in root.glob("*/wideep_deepep_normal_perf.parquet")])
    df = df[(df.node_num == 2) & (df.hidden_size == 7168) & (df.num_topk == 8) & (df.num_experts == 256)]
    t = (df.dispatch_transmit_us + df.dispatch_notify_us + df.combine_transmit_us + df.combine_notify_us)
    best = df.assign(t=t).groupby("num_token").t.min()
    at = aic_predict.deepep_ms("h100_sxm", "normal", 2, 7168, 8, 256, 32768)
    assert at == pytest.approx(best[32768] * 1e-3)  # a measured point: its fastest SM setting, ms
    mid = aic_predict.deepep_ms("h100_sxm", "normal", 2, 7168, 8, 256, 16384 * 2 ** 0.5)
    assert mid == pytest.approx((best[16384] * best[32768]) ** 0.5 * 1e-3)  # log-log midpoint
    assert aic_predict.deepep_ms("h100_sxm", "normal", 2, 4096, 8, 128, 32768) is None  # not measured


def test_a_row_whose_reference_keeps_the_all_gather_is_priced_on_that_path():
    from benchmarks.bench_fidelity import same_family
    row = {"config": "qwen3_235b_fp8_h100_ep16", "profile": {"ttft_ms": -1.0}, "flat": {}}
    same_family(row)
    assert row["exchange"] == "allgather" and row["profile_deepep"] == {"ttft_ms": -1.0}
    # 94 MoE layers x (all-gather + reduce-scatter) of S = 16 x 32,000 x 4096 x 2 B on the
    # 50 GB/s network at the H100 profile's sustained intra-node NCCL eta 0.75226, plus 15 ring
    # steps of 10 us: 94 x 2 x (15/16 x S / (50e9 x 0.75226) + 150e-6) s = 19,682.2 ms
    s = 16 * 32_000 * 4096 * 2
    hand_ms = 94 * 2 * (15 / 16 * s / (50e9 * 0.75226) + 150e-6) * 1e3
    assert row["profile"]["prefill_ms"]["moe_communication"] == pytest.approx(hand_ms, rel=1e-6)
    # the flat model: eta 1 at the same latencies
    flat_ms = 94 * 2 * (15 / 16 * s / 50e9 + 150e-6) * 1e3
    assert row["flat"]["prefill_ms"]["moe_communication"] == pytest.approx(flat_ms, rel=1e-6)
