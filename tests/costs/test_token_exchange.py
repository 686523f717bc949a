"""The MoE token exchange's kernel family (hardware.moe_token_exchange, costs/exchange.py):
the all-gather + reduce-scatter path by hand arithmetic, its place in the cost tables (a
load-independent term) and its memory, and the DeepEP default left exactly as it was."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from optimizer.costs import exchange, tables
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.units import LOAD_SCALE, seconds_to_ns
from optimizer.inputs.schema import Instance

REPO = Path(__file__).resolve().parents[2]
SEED = json.loads((REPO / "instances" / "10b_moe.json").read_text())  # h = 4096, 400/100 GB/s, 5/10 us


def _seed(**hardware) -> Instance:
    doc = copy.deepcopy(SEED)
    doc["hardware"].update(hardware)
    return Instance.model_validate(doc)


def _h100(**hardware) -> Instance:
    """The seed model (h = 4096) on H100s with the fitted profile (450/50 GB/s, 5/10 us)."""
    doc = copy.deepcopy(SEED)
    doc["hardware"] = {"preset": "h100-sxm", "num_gpus": 64, **hardware}
    return Instance.model_validate(doc)


def test_allgather_without_profile_is_the_alpha_beta_ring_on_the_slowest_link():
    inst = _seed(moe_token_exchange="allgather")
    # EP 16 over two nodes, 1,000 tokens per rank: S = 16 * 1000 * 4096 * 2 = 131,072,000 B;
    # one ring = 15/16 * S / 100 GB/s + 15 * 10 us = 1.2288 ms + 0.15 ms = 1.3788 ms; two of them
    assert exchange.token_exchange_s(inst, 16, 1000, 7, 8) == pytest.approx((0.0, 2 * 1.3788e-3))
    # EP 8 inside a node: S = 65,536,000; 7/8 * S / 400 GB/s + 7 * 5 us = 0.14336 + 0.035 ms
    assert exchange.token_exchange_s(inst, 8, 1000, 7, 0) == pytest.approx((0.0, 2 * 0.17836e-3))
    assert exchange.token_exchange_s(inst, 1, 1000, 0, 0) == (0.0, 0.0)


def test_allgather_with_profile_uses_the_measured_nccl_table_of_the_link():
    inst = _h100(moe_token_exchange="allgather")
    # EP 8 inside a node, 1,024 tokens per rank: S = 8 * 1024 * 4096 * 2 = 67,108,864 B, a point
    # of the h100-sxm all_gather intra 8-peer curve (eta 0.65606, latency 10.35 us):
    # 7/8 * S / (450e9 * 0.65606) + 10.35 us = 58,720,256 / 2.95227e11 + 10.35e-6 = 209.2487 us
    assert exchange.token_exchange_s(inst, 8, 1024, 7, 0) == pytest.approx((0.0, 2 * 209.24866e-6))


def test_allgather_across_nodes_borrows_the_sustained_intra_node_eta_and_ring_latencies():
    inst = _h100(moe_token_exchange="allgather")
    # no inter-node all_gather table: the intra 8-peer curve's last eta 0.75226 (at 512 MiB),
    # and 15 ring steps of the 10 us inter-node latency. S = 16 * 1024 * 4096 * 2 = 134,217,728;
    # 15/16 * S / (50e9 * 0.75226) = 125,829,120 / 3.7613e10 = 3.345363 ms; + 0.15 ms
    assert exchange.token_exchange_s(inst, 16, 1024, 7, 8) == pytest.approx((0.0, 2 * 3.4953625e-3))


def test_allgather_time_goes_to_the_load_independent_term_of_the_tables():
    inst = _seed(moe_token_exchange="allgather", num_gpus=16)
    deg = Degrees(tp=1, pp=1, dp=16, ep=16, etp=1, edp=1, micro_batches=1)
    facts = tables.LinkFacts.of(megatron_layout(deg, 8))
    assert (facts.ep_local_peers, facts.ep_remote_peers) == (7, 8)
    tokens = 1000
    f, w, a, k, alpha = tables.moe_terms(inst, deg, tokens, False, facts)
    assert k == 0  # ETP 1: no gathers; nothing of the exchange scales with the expert load
    assert alpha == seconds_to_ns(2 * 1.3788e-3)  # as above: 1000 tokens on each of 16 ranks
    phase = tables.PhaseCosts((0,), (0,), f, w, a, k, alpha, 0, 0, 0, deg.ep)
    assert phase.moe_comm_ns(LOAD_SCALE // 16) == phase.moe_comm_ns(LOAD_SCALE // 2) == alpha


def test_allgather_buffers_hold_the_gathered_batch_and_the_outputs():
    deepep, gather = _seed(), _seed(moe_token_exchange="allgather")
    deg = Degrees(tp=1, pp=1, dp=16, ep=16, etp=1, edp=1, micro_batches=1)
    kv = [0.0] * 16
    # all-gather: 4.158e9 + 2 * 16 * 1000 * 4096 * 2 = 4,158,000,000 + 262,144,000
    assert tables.memory_parts(gather, deg, 1000, kv).buffers == 4_420_144_000
    # all-to-all: 4.158e9 + (1 + 1.25) * 1000 * 2 * 4096 * 2 = 4,158,000,000 + 36,864,000
    assert tables.memory_parts(deepep, deg, 1000, kv).buffers == 4_194_864_000


@pytest.mark.parametrize("make", [_seed, _h100])
def test_deepep_default_is_unchanged_and_not_written(make):
    implicit, explicit = make(), make(moe_token_exchange="deepep")
    assert implicit.hardware.moe_token_exchange == "deepep"
    assert "moe_token_exchange" not in implicit.model_dump()["hardware"]
    assert make(moe_token_exchange="allgather").model_dump()["hardware"]["moe_token_exchange"] == "allgather"
    deg = Degrees(tp=1, pp=2, dp=16, ep=16, etp=1, edp=1, micro_batches=2)
    facts = tables.LinkFacts.of(megatron_layout(deg, 8))
    assert tables.stage_costs(implicit, deg, facts) == tables.stage_costs(explicit, deg, facts)
    gather = make(moe_token_exchange="allgather")
    assert tables.stage_costs(gather, deg, facts) != tables.stage_costs(implicit, deg, facts)


def test_unknown_exchange_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="moe_token_exchange"):
        _seed(moe_token_exchange="ring")
