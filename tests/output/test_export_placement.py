"""``moeopt export`` of a ``moeopt place`` result (with --instance): the replicated map reaches
SGLang and TensorRT-LLM unchanged, vLLM gets the replica count, the launch uses the EP ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from optimizer.cli.main import main
from tests.output.test_export import flag, launch_args

REPO = Path(__file__).resolve().parents[2]
QWEN = REPO / "instances" / "qwen3_30b_a3b_h200.json"   # 48 layers, all MoE, 128 experts


def placement(ep=8, redundant=8, layers=48, experts=128) -> dict:
    """A place-shaped result: per layer, rank r holds experts r, r+ep, ... (round robin) and
    the replica of expert (layer + r) % experts, so every layer differs."""
    out = []
    for layer in range(layers):
        ranks = [list(range(r, experts, ep)) for r in range(ep)]
        for r in range(redundant):
            ranks[r % ep].append((layer + r) % experts)
        out.append({"layer": layer, "ranks": [sorted(x) for x in ranks]})
    return {"num_ranks": ep, "num_nodes": 1, "slots_per_rank": (experts + redundant) // ep,
            "num_experts": experts, "redundant": redundant, "layers": out, "status": "feasible"}


def run(args, tmp_path):
    return CliRunner().invoke(main, ["export"] + [str(a) for a in args])


def test_place_result_exports_with_its_replicas(tmp_path):
    doc = placement()
    src = tmp_path / "place.json"
    src.write_text(json.dumps(doc))
    res = run([src, "--to", "sglang", "--instance", QWEN, "--output", tmp_path / "sg"], tmp_path)
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "sg" / "expert_location.json").read_text())["physical_to_logical_map"]
    # 48 rows of 128 + 8 = 136 slots; EP rank r = slots [17r, 17r + 17) = the place result's rank r
    assert len(rows) == 48 and all(len(row) == 136 for row in rows)
    for layer in (0, 17, 47):
        for r in range(8):
            assert sorted(rows[layer][17 * r:17 * r + 17]) == doc["layers"][layer]["ranks"][r]
    argv = launch_args(tmp_path / "sg")[1][0]
    assert flag(argv, "--ep-num-redundant-experts") == "8" and flag(argv, "--tp-size") == "8"
    res = run([src, "--to", "trtllm", "--instance", QWEN, "--output", tmp_path / "trt"], tmp_path)
    assert res.exit_code == 0, res.output
    y = yaml.safe_load((tmp_path / "trt" / "extra_llm_api_options.yaml").read_text())
    lb = y["moe_config"]["load_balancer"]
    assert lb["num_slots"] == 136 and sorted(lb["initial_global_assignments"]) == list(range(48))
    assert sorted(lb["initial_global_assignments"][5][:17]) == doc["layers"][5]["ranks"][0]
    res = run([src, "--to", "vllm", "--instance", QWEN, "--output", tmp_path / "vl"], tmp_path)
    assert res.exit_code == 0, res.output
    argv = launch_args(tmp_path / "vl")[1][0]
    assert json.loads(flag(argv, "--eplb-config")) == {"num_redundant_experts": 8}
    assert flag(argv, "--enable-eplb") is True and flag(argv, "-dp") == "8"


@pytest.mark.slow
def test_real_place_output_exports(tmp_path, monkeypatch):
    """End to end: `moeopt place` (Qwen3-30B-A3B: 128 experts on 8 ranks, 8 replicas), then
    `moeopt export` of its JSON; the placement's replicas are the export's."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["place", str(QWEN), "--redundant", "8", "--ep", "8",
                                    "--time-limit", "5", "--output", "place.json"])
    assert res.exit_code == 0, res.output
    placed = json.loads(Path("place.json").read_text())
    res = run(["place.json", "--to", "sglang", "--instance", QWEN, "--output", "sg"], tmp_path)
    assert res.exit_code == 0, res.output
    rows = json.loads(Path("sg/expert_location.json").read_text())["physical_to_logical_map"]
    per = placed["slots_per_rank"]
    for entry in placed["layers"]:
        row = rows[entry["layer"]]
        assert [sorted(row[r * per:(r + 1) * per]) for r in range(8)] == \
            [sorted(x) for x in entry["ranks"]]


def test_place_result_needs_instance_and_matching_layers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("p.json").write_text(json.dumps(placement()))
    res = run(["p.json", "--to", "sglang", "--output", "out"], tmp_path)
    assert res.exit_code == 2 and "--instance: required" in res.output
    Path("q.json").write_text(json.dumps(placement(layers=40)))
    res = run(["q.json", "--to", "sglang", "--instance", QWEN, "--output", "out"], tmp_path)
    assert res.exit_code == 2 and "placement: layers" in res.output
    assert not Path("out").exists()
