"""``solve --redundant-experts`` / ``search.redundant_experts``: the solved plan carries a
replicated expert map (placed by optimizer.place on the chosen EP degree), is re-evaluated
with each replicated expert's load split over its replicas, and exports with its replicas."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from optimizer.cli.common import load_instance
from optimizer.cli.main import main
from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.timing import hot_load
from optimizer.costs.units import LOAD_SCALE
from optimizer.inputs.schema import SearchSpec
from tests.output.test_export import flag, launch_args

REPO = Path(__file__).resolve().parents[2]
QWEN = REPO / "instances" / "qwen3_30b_a3b_h200.json"


def test_hot_load_splits_replicated_experts():
    # loads 60, 30, 10 (parts); rank 0 holds {0, 1}, rank 1 holds {0, 2}: expert 0 has two
    # replicas -> 30 each; rank 0 = 30 + 30 = 60, rank 1 = 30 + 10 = 40
    assert hot_load((60, 30, 10), [(0, 1), (0, 2)]) == 60
    # without replicas the plain sum: rank 0 = 90
    assert hot_load((60, 30, 10), [(0, 1), (2,)]) == 90
    # an odd load rounds up: 7 over two replicas counts 4 on each
    assert hot_load((7, 1), [(0,), (0, 1)]) == 5


def test_search_field_absent_from_dumps_when_unset():
    assert "redundant_experts" not in SearchSpec().model_dump()
    assert SearchSpec(redundant_experts=8).model_dump()["redundant_experts"] == 8


@pytest.mark.slow
def test_solve_with_redundant_experts_then_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["solve", str(QWEN), "--time-limit", "20",
                                    "--redundant-experts", "8", "--output", "plan.json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(Path("plan.json").read_text())
    ep = doc["degrees"]["ep"]
    assert doc["redundant_experts"] == 8 and doc["status"] == "feasible"
    for layer, ranks in doc["expert_placement"].items():
        slots = [e for r in ranks for e in r]
        # 128 experts + 8 replicas over EP ranks, every expert at least once, equal ranks
        assert len(slots) == 136 and set(slots) == set(range(128)), layer
        assert {len(r) for r in ranks} == {136 // ep}
        assert sum(c - 1 for c in Counter(slots).values()) == 8
    # the re-evaluated load imbalance, recomputed here from the file and the instance's loads:
    # each rank's load sums its experts' loads, a replicated expert's split over its copies
    inst = load_instance(str(QWEN))
    loads = dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))
    worst = 0.0
    for layer, ranks in doc["expert_placement"].items():
        copies = Counter(e for r in ranks for e in r)
        row = loads[int(layer)]
        per_rank = [sum(row[e] / copies[e] for e in r) for r in ranks]
        worst = max(worst, max(per_rank) * ep / LOAD_SCALE)
    # hot_load rounds each split share up to a whole part: at most 136 parts more per rank
    assert abs(doc["metrics"]["load_imbalance"] - (worst - 1)) <= 136 * ep / LOAD_SCALE
    res = CliRunner().invoke(main, ["export", "plan.json", "--to", "sglang", "--instance",
                                    str(QWEN), "--output", "sg"])
    assert res.exit_code == 0, res.output
    argv = launch_args(Path("sg"))[1][0]
    assert flag(argv, "--ep-num-redundant-experts") == "8"
    rows = json.loads(Path("sg/expert_location.json").read_text())["physical_to_logical_map"]
    assert all(len(row) == 136 for row in rows)


def test_redundant_experts_that_do_not_split_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["solve", str(QWEN), "--time-limit", "20",
                                    "--redundant-experts", "3", "--output", "plan.json"])
    assert res.exit_code == 2, res.output
    assert "--redundant-experts=3" in res.output and not Path("plan.json").exists()
