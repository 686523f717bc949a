"""``moeopt explain``'s speed-of-light fractions for the MoE token exchange (DeepEP and the
all-gather path) and the elementwise kernels, by hand arithmetic: SOL = bytes / link
bandwidth for communication, bytes / HBM bandwidth for the elementwise kernels.

Set-up: the seed model (h = 4096, E = 16 experts, k = 2, 16 layers, all MoE; gated = no) on
16 H100s with the fitted profile (NVLink 450, network 50 GB/s, HBM 3350 GB/s), TP 1, DP = EP =
16 over two nodes, one expert per rank, uniform routing (hot load = Q/16), one micro-batch
of 8 sequences x 10,240 prompt tokens: T = 81,920 tokens per rank, T*h*a = 671,088,640 B."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.units import LOAD_SCALE
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Plan, evaluate
from optimizer.plan.explain import explain
from optimizer.plan.files import even_stages

REPO = Path(__file__).resolve().parents[2]
SEED = json.loads((REPO / "instances" / "10b_moe.json").read_text())
DEG = Degrees(tp=1, pp=1, dp=16, ep=16, etp=1, edp=1, micro_batches=1)
ROW = 81_920 * 4096 * 2  # one rank's hidden states, bytes


def _explain(exchange: str, profile: bool = True) -> tuple[dict, Instance, Plan]:
    doc = copy.deepcopy(SEED)
    doc["hardware"] = {"preset": "h100-sxm", "num_gpus": 16, "moe_token_exchange": exchange}
    if not profile:
        doc["hardware"]["profile"] = None
    doc["expert_load"] = {"kind": "uniform"}
    inst = Instance.model_validate(doc)
    placement = {layer: tuple((r,) for r in range(16)) for layer in inst.model.moe_layer_ids}
    plan = Plan(inst.name, DEG, even_stages(16, 1), placement, megatron_layout(DEG, 8))
    assert evaluate(inst, plan).hot_loads == [LOAD_SCALE // 16] * 16
    rows = {r["operator"]: r for r in explain(inst, plan)["phases"]["prefill"]["operators"]}
    return rows, inst, plan


def _sol_ms(row: dict) -> float:
    return row["sol_fraction"] * row["time_ms"]


def test_deepep_sol_is_its_rdma_bytes_over_the_network():
    rows, _, _ = _explain("deepep")
    comm = rows["moe_communication"]
    # DeepEP normal (T > 128): NVLink 15 * ROW * P(one expert hit) = 15 * ROW * (1 - 15/16*14/15)
    # = 15 * 671,088,640 * 0.125 = 1,258,291,200 B -> / 450 GB/s = 2.796 ms; RDMA to the other
    # node (8 experts): ROW * (1 - 8/16*7/15) = ROW * 0.766667 = 514,501,290.7 B -> / 50 GB/s
    # = 10.290026 ms, the slower link. Both directions: 20.580052 ms per layer at the balanced
    # load; 16 layers: 329.2808 ms
    assert _sol_ms(comm) == pytest.approx(329.2808, rel=1e-5)
    assert "DeepEP" in comm["source"]


def test_allgather_sol_is_the_gathered_bytes_over_the_slowest_link():
    rows, _, _ = _explain("allgather")
    comm = rows["moe_communication"]
    # each rank receives 15 * ROW = 10,066,329,600 B in the all-gather and as many in the
    # reduce-scatter, over the 50 GB/s network: 2 * 201.3266 ms per layer; 16 layers: 6442.4509 ms
    assert _sol_ms(comm) == pytest.approx(6442.450944, rel=1e-6)
    # the time: the same bytes at the lent eta 0.75226 plus 2 x 15 ring steps of 10 us a layer,
    # 16 * (2 * 201.3266 / 0.75226 + 0.3) ms = 8568.93 ms
    assert comm["time_ms"] == pytest.approx(16 * (2 * 15 * ROW / 50e9 * 1e3 / 0.75226 + 0.3), rel=1e-6)
    assert "all-gather + reduce-scatter" in comm["source"]


def test_elementwise_sol_is_its_bytes_over_hbm():
    rows, _, _ = _explain("deepep")
    # norms and residual adds, no gate (2 FFN matrices): 8 * h * a = 65,536 B per token and layer;
    # 81,920 tokens * 65,536 B * 16 layers = 85,899,345,920 B / 3350 GB/s = 25.6416 ms
    assert _sol_ms(rows["elementwise"]) == pytest.approx(25.641596, rel=1e-6)
    assert rows["elementwise"]["sol_fraction"] == pytest.approx(0.8, abs=1e-3)  # streamed at 80 % of HBM


def test_flat_model_has_no_separate_elementwise_time_and_alpha_beta_exchange_sol():
    rows, _, _ = _explain("deepep", profile=False)
    assert rows["elementwise"]["time_ms"] == 0 and rows["elementwise"]["sol_fraction"] is None
    # the flat all-to-all sends k = 2 copies per token, ROW * 2 / 16 from each peer: 7 local
    # peers at 450 GB/s (0.1864 ms), 8 remote at 50 GB/s (13.4218 ms, the slower); both
    # directions, 16 layers: 429.4967 ms; the time adds 2 x 10 us a layer
    comm = rows["moe_communication"]
    assert _sol_ms(comm) == pytest.approx(16 * 2 * 8 * ROW * 2 / 16 / 50e9 * 1e3, rel=1e-6)
    assert comm["time_ms"] == pytest.approx(_sol_ms(comm) + 16 * 0.02, rel=1e-6)
