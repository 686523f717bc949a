"""``moeopt check`` of a plan with redundant expert slots, by hand arithmetic.

Instance: the seed 10B MoE (16 layers, all MoE, 16 experts, 2 FFN matrices of 4096 x 4096 in
FP16) on 4 GPUs, TP1 DP4 EP4, with measured counts per layer: expert 0 = 90, experts 1..15 = 10
(sum 240, mean per rank 60). Plan: 20 slots per layer (4 redundant), 5 per EP rank: expert 0 on
every rank (4 replicas), expert 1 on ranks 0 and 1 (2 replicas).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from optimizer.cli.main import main
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.inputs.schema import Instance
from optimizer.plan.check import check_plan_file

REPO = Path(__file__).resolve().parents[2]
RANKS = [[0, 1, 2, 3, 4], [0, 1, 5, 6, 7], [0, 8, 9, 10, 11], [0, 12, 13, 14, 15]]
EXPERT_BYTES = 2 * 4096 * 4096 * 2     # 2 matrices x hidden x FFN x 2 bytes = 67,108,864


def instance() -> dict:
    doc = json.loads((REPO / "instances" / "10b_moe.json").read_text())
    doc["hardware"]["num_gpus"] = 4
    doc["expert_load"] = {"kind": "counts", "counts": [[90] + [10] * 15] * 16}
    return doc


def plan(ranks: list[list[int]]) -> dict:
    deg = Degrees(1, 1, 4, 4, 1, 1, 1)
    gpus = [{"rank": s.rank, "node": s.node, "local_rank": s.local_rank, "stage": s.stage,
             "tp_rank": s.tp_rank, "dp_rank": s.dp_rank, "ep_rank": s.ep_rank}
            for s in megatron_layout(deg, 8)]
    doc = {"schema_version": 1, "instance": "10b_moe", "status": "feasible", "num_gpus": 4,
           "degrees": {"tp": 1, "pp": 1, "dp": 4, "ep": 4, "etp": 1, "edp": 1},
           "micro_batches": 1, "expert_placement": {str(layer): ranks for layer in range(16)},
           "gpus": gpus}
    slots = sum(len(r) for r in ranks)
    if slots > 16:
        doc["redundant_experts"] = slots - 16
    return doc


def checked(tmp_path: Path, ranks) -> tuple[dict, str, bool]:
    inst_path, plan_path = tmp_path / "i.json", tmp_path / f"p{len(ranks[0])}.json"
    inst_path.write_text(json.dumps(instance()))
    plan_path.write_text(json.dumps(plan(ranks)))
    inst = Instance.model_validate(instance())
    return check_plan_file(inst, str(plan_path))


def test_replicated_plan_is_evaluated_with_shared_loads_and_replica_weights(tmp_path):
    doc, text, _ = checked(tmp_path, RANKS)
    assert all(c["ok"] for c in doc["checks"] if c["unit"] == "rule"), doc["checks"]
    # hot rank: expert 0's 90 in 4 shares of 22.5, expert 1's 10 in 2 shares of 5:
    # rank 0: 22.5 + 5 + 30 = 57.5, rank 1: 57.5, ranks 2 and 3: 22.5 + 40 = 62.5;
    # 62.5 / 60 - 1 = 0.041667 (loads are integer parts of LOAD_SCALE, rounded up per share)
    assert doc["metrics"]["load_imbalance"] == pytest.approx(62.5 / 60 - 1, abs=1e-4)
    # the same experts without replicas, expert 0 alone on rank 0 with 1..3: 90 + 30 = 120,
    # 120 / 60 - 1 = 1.0
    plain, _, _ = checked(tmp_path, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]])
    assert plain["metrics"]["load_imbalance"] == pytest.approx(1.0, abs=1e-4)
    # memory: the cost model counts 16 // 4 = 4 experts per rank, the plan holds 5: one more
    # expert per MoE layer on every GPU, 16 layers x 67,108,864 bytes = 1.073741824 GB
    extra_gb = 16 * EXPERT_BYTES / 1e9
    assert extra_gb == pytest.approx(1.073741824)
    assert doc["metrics"]["max_memory_gb"] - plain["metrics"]["max_memory_gb"] == pytest.approx(extra_gb, abs=1e-9)
    memory = next(c for c in doc["checks"] if c["name"] == "memory_per_gpu")
    assert memory["value"] == pytest.approx(doc["metrics"]["max_memory_gb"])
    assert "redundant" not in text


def test_replica_weights_can_break_the_memory_limit(tmp_path):
    """The replicas' gigabyte is what pushes the plan over a limit set between the two."""
    plain, _, ok_plain = checked(tmp_path, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]])
    limit = plain["metrics"]["max_memory_gb"] + 0.5          # 0.5 GB < 1.0737 GB of replicas
    doc = instance()
    doc["requirements"]["max_memory_gb"] = limit
    inst = Instance.model_validate(doc)
    p = tmp_path / "r.json"
    p.write_text(json.dumps(plan(RANKS)))
    out, _, _ = check_plan_file(inst, str(p))
    memory = next(c for c in out["checks"] if c["name"] == "memory_per_gpu")
    assert not memory["ok"] and memory["value"] > limit


def test_cli_check_accepts_a_replicated_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("i.json").write_text(json.dumps(instance()))
    Path("p.json").write_text(json.dumps(plan(RANKS)))
    res = CliRunner().invoke(main, ["check", "i.json", "p.json", "--format", "json"])
    assert res.exit_code in (0, 3), res.output          # 3 only for a requirement it misses
    out = json.loads(res.output)
    placement = next(c for c in out["checks"] if c["name"].startswith("expert_placement"))
    assert placement["ok"] and "problems" not in out
