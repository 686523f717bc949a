"""The all-to-all under a hardware profile: DeepEP's byte model (normal kernels send a token
once per destination rank, and once per destination node across nodes; low-latency kernels
send every (token, expert) pair), the per-message latency, the inter-node tables, and the
fit of those tables from aiconfigurator-shaped measurements. Expected values by hand."""

from __future__ import annotations

import copy
import json
from math import comb
from pathlib import Path

import pytest

from optimizer.costs import formulas as cm
from optimizer.costs import profiled
from optimizer.costs.profile import PROFILE_DIR, efficiency_of
from optimizer.inputs.schema import Instance

REPO = Path(__file__).resolve().parents[2]
SEED = json.loads((REPO / "instances" / "10b_moe.json").read_text())  # E 16, top-2, h 4096


def _a2a_profile(tmp_path) -> str:
    """Constant-efficiency DeepEP tables: normal intra 0.8 / 30 us, inter 0.9 / 70 us;
    low-latency intra 0.5 / 10 us, inter 0.6 / 25 us (16 peers for the inter ones)."""
    doc = json.loads((PROFILE_DIR / "seed-gpu.json").read_text())

    def table(link, family, peers, latency, eta):
        return {"op": "all_to_all", "link": link, "family": family, "peers": peers,
                "latency_us": latency, "over_bytes": {"x": [1.0], "efficiency": [eta]}}
    doc["collectives"] = [table("intra", "deepep_normal", 8, 30.0, 0.8), table("inter", "deepep_normal", 16, 70.0, 0.9),
                          table("intra", "deepep_ll", 8, 10.0, 0.5), table("inter", "deepep_ll", 16, 25.0, 0.6)]
    path = tmp_path / "a2a.json"
    path.write_text(json.dumps(doc))
    return str(path)


def _seed(profile: str | None = None) -> Instance:
    doc = copy.deepcopy(SEED)
    doc["hardware"]["profile"] = profile
    return Instance.model_validate(doc)


def test_hit_probability_by_counting():
    # E 16, top-2, a group of 1 expert: misses = C(15,2)/C(16,2) = 105/120
    assert cm.hit_probability(16, 2, 1) == pytest.approx(15 / 120)
    # a group of 8: C(8,2)/C(16,2) = 28/120 missed
    assert cm.hit_probability(16, 2, 8) == pytest.approx(92 / 120)
    # DeepSeek-V3 (E 256, top-8) on EP 8: 32 experts per rank
    assert cm.hit_probability(256, 8, 32) == pytest.approx(1 - comb(224, 8) / comb(256, 8))
    assert cm.hit_probability(16, 2, 16) == 1.0 and cm.hit_probability(16, 2, 0) == 0.0


def test_deepep_normal_bytes_by_hand():
    # 4,096 tokens per rank, h 4096, 2-byte activations: 33,554,432 B of rows per rank; E 16, top-2
    row = 4096 * 4096 * 2
    nvlink, rdma = cm.deepep_normal_bytes(4096, 4096, 2, 16, 2, 16, 8)
    assert nvlink == pytest.approx(15 * row * 15 / 120)  # 15 peers, P(rank hit) = 1/8
    assert rdma == pytest.approx(1 * row * 92 / 120)  # one remote node, P(node hit) = 92/120
    nvlink, rdma = cm.deepep_normal_bytes(4096, 4096, 2, 16, 2, 8, 8)  # one node: no RDMA
    assert nvlink == pytest.approx(7 * row * (1 - comb(14, 2) / comb(16, 2))) and rdma == 0.0


def test_profiled_all_to_all_normal_and_low_latency_by_hand(tmp_path):
    inst = _seed(_a2a_profile(tmp_path))
    eff = efficiency_of(inst)
    # normal (4,096 tokens per rank > 128), EP 16 over two nodes of 8: NVLink 15 * 33,554,432
    # * 1/8 = 62,914,560 B at 400 GB/s * 0.8 = 196.608 us; RDMA 33,554,432 * 92/120 =
    # 25,725,064.53 B at 100 GB/s * 0.9 = 285.834 us -> balanced 285.834 us, full load x16
    full_s, latency_s = profiled.a2a_profiled_s(inst, eff, 4096, 16, 7, 8)
    assert full_s == pytest.approx(16 * 33_554_432 * 92 / 120 / (100e9 * 0.9))
    assert latency_s == pytest.approx(70e-6)  # the larger per-message latency of the two links
    # the same inside one node (7 local peers, no remote): NVLink only, 30 us
    full_s, latency_s = profiled.a2a_profiled_s(inst, eff, 4096, 8, 7, 0)
    one_rank = 7 * 33_554_432 * (1 - 91 / 120)  # E/EP = 2 experts per rank: C(14,2) = 91 missed
    assert full_s == pytest.approx(8 * one_rank / (400e9 * 0.8)) and latency_s == pytest.approx(30e-6)
    # low-latency (64 tokens per rank): every (token, expert) pair, 64 * 2 * 4096 * 2 / 16 =
    # 65,536 B from each peer: 7 local at 400 GB/s * 0.5 = 2.294 us, 8 remote at 100 GB/s *
    # 0.6 = 8.738 us -> 8.738 us balanced
    full_s, latency_s = profiled.a2a_profiled_s(inst, eff, 64, 16, 7, 8)
    assert full_s == pytest.approx(16 * 8 * 65_536 / (100e9 * 0.6))
    assert latency_s == pytest.approx(25e-6)


def test_profile_without_inter_node_tables_lends_the_intra_curve(tmp_path):
    path = Path(_a2a_profile(tmp_path))
    doc = json.loads(path.read_text())
    doc["collectives"] = [t for t in doc["collectives"] if t["link"] == "intra"]
    path.write_text(json.dumps(doc))
    inst = _seed(str(path))
    full_s, latency_s = profiled.a2a_profiled_s(inst, efficiency_of(inst), 4096, 16, 7, 8)
    # RDMA bytes over the 100 GB/s inter-node link at the intra-node eta 0.8
    assert full_s == pytest.approx(16 * 33_554_432 * 92 / 120 / (100e9 * 0.8))
    assert latency_s == pytest.approx(30e-6)


def test_flat_instance_has_no_profiled_all_to_all():
    inst = _seed(None)
    assert efficiency_of(inst).flat  # the cost tables keep the alpha-beta formula (§1.5)


def test_inter_node_deepep_fit_recovers_known_efficiency():
    """aiconfigurator-shaped DeepEP normal rows on 1 and 2 nodes (per direction: a fixed
    latency plus the model's bytes over the link at a known eta) give the etas back."""
    import pandas as pd

    from optimizer.profiles import aiconfigurator as aic
    rows = []
    for nodes, bw, eta, alpha_us in ((1, 450e9, 0.85, 25.0), (2, 50e9, 0.95, 60.0)):
        for tokens in (1, 512, 8192, 65536):
            nvlink, rdma = cm.deepep_normal_bytes(tokens, 7168, 2, 256, 8, 8 * nodes, 8)
            size = nvlink if nodes == 1 else rdma
            t_us = alpha_us + size / (bw * eta) * 1e6  # one direction
            rows.append({"node_num": nodes, "hidden_size": 7168, "num_token": tokens, "num_topk": 8,
                         "num_experts": 256, "dispatch_sms": 24, "combine_sms": 24,
                         "dispatch_transmit_us": t_us, "dispatch_notify_us": 0.0,
                         "combine_transmit_us": t_us, "combine_notify_us": 0.0})
    tables = aic.fit_collectives(None, None, None, pd.DataFrame(rows), 450.0, 50.0)
    by_link = {t["link"]: t for t in tables}
    assert by_link["intra"]["peers"] == 8 and by_link["inter"]["peers"] == 16
    assert by_link["intra"]["latency_us"] == pytest.approx(25.0 + 0.0, abs=0.5)
    assert by_link["inter"]["latency_us"] == pytest.approx(60.0, abs=1.0)
    assert by_link["intra"]["over_bytes"]["efficiency"][-1] == pytest.approx(0.85, rel=1e-3)
    assert by_link["inter"]["over_bytes"]["efficiency"][-1] == pytest.approx(0.95, rel=1e-3)


def test_shipped_hopper_profiles_carry_inter_node_deepep_tables():
    for name in ("h100-sxm", "h200-sxm"):
        doc = json.loads((PROFILE_DIR / f"{name}.json").read_text())
        inter = {(t["family"], t["peers"]) for t in doc["collectives"] if t["link"] == "inter"}
        assert {("deepep_normal", 16), ("deepep_ll", 16)} <= inter
        assert "node_num 2 (sglang 0.5.6.post2)" in doc["provenance"]["source"]
