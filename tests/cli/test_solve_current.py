"""``moeopt solve --current PLACEMENT`` / ``search.current_placement``: the solved plan's
experts are placed with the fewest moves from the placement in service, within the tolerance
of the best balance; checked against brute force (every placement of a layer enumerated, loads
as exact fractions), against the from-scratch plan, by ``moeopt check`` and through an export.

The instance: 2 layers x 8 experts (top-2, power-law loads) on 4 GPUs with 0.6 GB each, so
the weights only fit with the experts split (the EP2 plan holds 0.483 GB per GPU, 0.550 GB with
the 2 redundant slots' weights: one more 33.6 MB expert per rank in each of 2 layers; EP1
would need 4 x 2 x 33.6 MB = 0.268 GB more than EP2, 0.75 GB): the solve picks EP2 (4 experts per rank, or 5
with 2 redundant slots); brute force enumerates C(8,4)^2 = 4,900 (C(8,5)^2 = 3,136) plans.
"""

from __future__ import annotations

import copy
import json
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from optimizer.cli.migration import moves_per_gpu
from optimizer.inputs.schema import Instance, SearchSpec
from optimizer.place.current import read_current
from optimizer.place.migrate import count_moves
from tests.cpsat.test_edges import tiny
from tests.oracles import fuzzkit
from tests.place.test_place_migrate import all_plans, brute_moves, exact_max

REPO = Path(__file__).resolve().parents[2]
EXPERTS, EP = 8, 2


def mig_doc() -> dict:
    doc = tiny(4)
    doc["name"] = "mig8"
    doc["model"].update(num_experts=EXPERTS, top_k=2, hidden_size=1024, expert_ffn_size=8192,
                        num_attention_heads=8, num_kv_heads=8, head_dim=128)
    doc["expert_load"] = {"kind": "power_law", "exponent": 1.0, "seed": 3}
    doc["hardware"]["gpu"]["memory_gb"] = 0.6
    doc["hardware"].update(nccl_buffer_gb=0.01, runtime_reserve_gb=0.01)
    doc["workload"].update(batch_sequences=64, prompt_tokens=128)
    doc["requirements"] = {"max_ttft_s": 10}
    doc["search"] = {"workers": 1, "seed": 0, "time_limit_s": 20}
    return doc


def write_instance(folder: Path, **search) -> Path:
    doc = mig_doc()
    doc["search"].update(search)
    path = folder / "mig8.json"
    path.write_text(json.dumps(doc))
    return path


def solve(folder: Path, *args: str) -> fuzzkit.Outcome:
    return fuzzkit.invoke(["solve", str(folder / "mig8.json"), "--format", "json", "--output", "plan.json",
                           *args], folder)


def loads(folder: Path) -> dict[int, list[int]]:
    """The instance's integer expert loads per MoE layer (what the placement balances)."""
    from optimizer.costs.expert_loads import expert_loads
    inst = Instance.model_validate(mig_doc())
    return dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))


def random_current(rng: random.Random, slots: int) -> dict[str, list[list[int]]]:
    """A valid placement of both layers on EP ranks: every expert once, ``slots - 8``
    of them twice (on different ranks)."""
    out = {}
    plans = list(all_plans(EXPERTS, EP, slots // EP))
    for layer in ("0", "1"):
        out[layer] = [list(r) for r in plans[rng.randrange(len(plans))]]
    return out


def test_moves_per_gpu_sum_over_the_layers_of_a_stage_by_hand():
    from types import SimpleNamespace
    # PP2: stage 0 holds layers 0 and 1, stage 1 layer 2; EP2, 2 experts per rank
    plan = SimpleNamespace(stages=((0, 1), (2,)),
                           placement={0: ((0, 1), (2, 3)), 1: ((0, 2), (1, 3)), 2: ((2, 3), (0, 1))})
    current = {0: [[0, 1], [2, 3]], 1: [[0, 1], [2, 3]], 2: [[0, 1], [2, 3]]}
    # stage 0: layer 0 keeps all; layer 1 copies expert 2 onto rank 0 and 1 onto rank 1: 1 each.
    # stage 1: layer 2 swaps the ranks' sets: 2 copies into each rank
    assert moves_per_gpu(plan, current) == {(0, 0): 1, (0, 1): 1, (1, 0): 2, (1, 1): 2}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict:
    """The plan without a current placement (the from-scratch plan)."""
    folder = tmp_path_factory.mktemp("scratch")
    write_instance(folder)
    out = solve(folder)
    assert out.code == 0, out.stderr
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["degrees"]["ep"] == EP and "migration" not in plan
    return plan


@pytest.mark.parametrize("redundant,tolerance", [(0, 0.0), (0, 0.05), (2, 0.0), (2, 0.02)])
def test_moves_equal_brute_force_and_never_exceed_scratch(tmp_path, scratch, redundant, tolerance):
    write_instance(tmp_path)
    slots = EXPERTS + redundant
    rng = random.Random(100 * redundant + int(1000 * tolerance))
    row = loads(tmp_path)
    for _ in range(2):
        current = random_current(rng, slots)
        (tmp_path / "current.json").write_text(json.dumps({"expert_placement": current}))
        out = solve(tmp_path, "--current", "current.json", "--tolerance", str(tolerance),
                    "--redundant-experts", str(redundant))
        assert out.code == 0, out.stderr
        plan = json.loads((tmp_path / "plan.json").read_text())
        mig = plan["migration"]
        assert mig["reused"] and mig["moves_proven_minimal"]
        moves = 0
        for layer, ranks in plan["expert_placement"].items():
            n, cur = row[int(layer)], current[layer]
            best, least = brute_moves(n, cur, EP, slots // EP, tolerance)
            got = count_moves(np.array(ranks), np.array(cur))[0]
            assert got == least, (layer, ranks, cur)       # the fewest moves within the tolerance
            assert exact_max(n, ranks) <= best * (1 + Fraction(tolerance).limit_denominator(10**9))
            moves += got
        assert mig["moves"] == moves <= mig["scratch_moves"]
        if not redundant:  # the from-scratch plan (same solve, no current placement), unrelabelled
            plain = sum(count_moves(np.array(scratch["expert_placement"][k]), np.array(v))[0]
                        for k, v in current.items())
            assert moves <= plain
        # bytes: 2 layers x 4 experts' moves; one expert = 2 matrices x 1024 x 8192 x 2 bytes
        assert mig["expert_bytes"] == 2 * 1024 * 8192 * 2
        assert mig["moved_bytes"] == moves * mig["expert_bytes"] * plan["degrees"]["edp"]
        per_gpu = [sum(len(set(plan["expert_placement"][k][g]) - set(current[k][g])) for k in current)
                   for g in range(EP)]
        assert mig["max_moves_per_gpu"] == max(per_gpu)


def test_written_plan_passes_check_and_states_its_figures(tmp_path, scratch):
    write_instance(tmp_path)
    current = random_current(random.Random(7), EXPERTS)
    (tmp_path / "current.json").write_text(json.dumps({"expert_placement": current}))
    out = fuzzkit.invoke(["solve", "mig8.json", "--current", "current.json", "--output", "plan.json"], tmp_path)
    assert out.code == 0, out.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    mig = plan["migration"]
    line = [s for s in out.stdout.splitlines() if s.startswith("current placement")]
    assert line == [f"current placement current.json: {mig['moves']} expert moves of 16 slots "
                    f"({100 * mig['kept_fraction']:.2f}% kept; from scratch {mig['scratch_moves']}), "
                    f"{mig['moved_bytes'] / 1e9:.3f} GB moved over all GPUs, at most "
                    f"{mig['max_moved_bytes_per_gpu'] / 1e9:.3f} GB into one GPU; balance given up "
                    f"{100 * mig['balance_given_up']:.4f}% of the best (tolerance 0.1%)"]
    check = fuzzkit.invoke(["check", "mig8.json", "plan.json"], tmp_path)
    assert check.code == 0, check.stdout + check.stderr
    assert "every constraint holds" in check.stdout
    # the figures are the plan's own: the solver block's objective is the metric's
    assert plan["solver"]["objective"] == pytest.approx(plan["metrics"]["objective_ms"], rel=1e-9)


def test_a_different_ep_degree_is_one_line_and_a_from_scratch_plan(tmp_path, scratch):
    write_instance(tmp_path)
    four = {k: [[0, 1], [2, 3], [4, 5], [6, 7]] for k in ("0", "1")}
    (tmp_path / "four.json").write_text(json.dumps({"expert_placement": four}))
    out = solve(tmp_path, "--current", "four.json")
    assert out.code == 0, out.stderr
    lines = [s for s in out.stderr.splitlines() if "four.json" in s]
    assert lines == ["moeopt: --current four.json: not reused, the plan is placed from scratch: it has 4 EP "
                     "ranks and the plan EP2; a different EP degree regroups the experts, so nearly every "
                     "one would move anyway"]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["migration"] == {"current": "four.json", "reused": False, "reason": lines[0][len("moeopt: "):]}
    assert plan["expert_placement"] == scratch["expert_placement"]
    assert plan["status"] == scratch["status"]


def test_instance_field_is_relative_to_the_instance_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write_instance(tmp_path / "sub", current_placement="current.json")
    current = random_current(random.Random(3), EXPERTS)
    (tmp_path / "sub" / "current.json").write_text(json.dumps({"expert_placement": current}))
    out = fuzzkit.invoke(["solve", "sub/mig8.json", "--format", "json", "--output", "plan.json"], tmp_path)
    assert out.code == 0, out.stderr
    mig = json.loads((tmp_path / "plan.json").read_text())["migration"]
    assert mig["reused"] and mig["current"] == str(Path("sub") / "current.json")
    assert SearchSpec(current_placement="x.json").model_dump()["current_placement"] == "x.json"
    assert "current_placement" not in SearchSpec().model_dump()  # unset: instances dump as before


def test_export_round_trips_the_migration_aware_map(tmp_path):
    write_instance(tmp_path)
    # an SGLang expert-location map with 2 replicas per layer (10 slots, 5 per EP rank)
    table = [[0, 1, 2, 3, 4, 0, 5, 6, 7, 1], [7, 6, 5, 4, 3, 2, 1, 0, 3, 6]]
    (tmp_path / "loc.json").write_text(json.dumps({"physical_to_logical_map": table}))
    out = solve(tmp_path, "--current", "loc.json", "--redundant-experts", "2")
    assert out.code == 0, out.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["migration"]["reused"] and plan["redundant_experts"] == 2
    exp = fuzzkit.invoke(["export", "plan.json", "--to", "sglang", "--instance", "mig8.json", "--output", "sg"],
                         tmp_path)
    assert exp.code == 0, exp.stderr
    back = read_current(str(tmp_path / "sg" / "expert_location.json"), [0, 1], EXPERTS, EP, 5)
    for layer, ranks in plan["expert_placement"].items():
        assert [sorted(r) for r in back[int(layer)].tolist()] == ranks
    # and the exported map is a current placement again: nothing to move
    again = solve(tmp_path, "--current", "sg/expert_location.json", "--redundant-experts", "2",
                  "--output", "again.json")
    assert again.code == 0, again.stderr
    assert json.loads((tmp_path / "again.json").read_text())["migration"]["moves"] == 0


BAD = [
    ("missing.json", None, "--current missing.json: no such file"),
    ("text.json", "not json", "--current text.json"),
    ("list.json", [1, 2], "a JSON object is required"),
    ("keys.json", {"ranks": []}, "none of the keys"),
    ("range.json", {"expert_placement": {"0": [[0, 1, 2, 3], [4, 5, 6, 9]], "1": [[0, 1, 2, 3], [4, 5, 6, 7]]}},
     "layer 0: rank 1 holds expert 9; ids are integers in [0, 8)"),
    ("layer.json", {"expert_placement": {"0": [[0, 1, 2, 3], [4, 5, 6, 7]]}}, "no placement for MoE layer 1"),
    ("lost.json", {"expert_placement": {"0": [[0, 1, 2, 3], [4, 5, 6, 6]], "1": [[0, 1, 2, 3], [4, 5, 6, 7]]}},
     "layer 0: rank 1 holds an expert twice"),
    ("ragged.json", {"physical_to_logical_map": [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]]},
     "every layer has the same slots"),
    ("uneven.json", {"expert_placement": {"0": [[0, 1, 2, 3], [4, 5, 6, 7]], "1": [[0, 1, 2, 3, 4], [5, 6, 7]]}},
     "layer 1: rank 0 holds 5 experts"),
]


@pytest.mark.parametrize("name,content,message", BAD, ids=[b[0] for b in BAD])
def test_bad_current_files_exit_2_in_one_line(tmp_path, name, content, message):
    write_instance(tmp_path)
    if content is not None:
        (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
    out = solve(tmp_path, "--current", name)
    assert out.code == 2, out.stdout + out.stderr
    assert out.exception is None
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "plan.json").exists()


def test_bad_instance_field_file_names_the_field(tmp_path):
    write_instance(tmp_path, current_placement="gone.json")
    out = solve(tmp_path)
    assert out.code == 2 and out.stderr.strip() == f"moeopt: search.current_placement {tmp_path / 'gone.json'}: no such file"


def test_options_without_a_current_placement_or_with_disagg_exit_2(tmp_path):
    write_instance(tmp_path)
    out = solve(tmp_path, "--tolerance", "0.1")
    assert out.code == 2 and "--tolerance=0.1: applies with a current placement" in out.stderr
    service = copy.deepcopy(json.loads((REPO / "instances" / "10b_moe_service.json").read_text()))
    service["search"] = {"current_placement": "x.json"}
    (tmp_path / "svc.json").write_text(json.dumps(service))
    out = fuzzkit.invoke(["solve", "svc.json", "--mode", "disagg", "--output", "p.json"], tmp_path)
    assert out.code == 2 and "search.current_placement: --mode=disagg" in out.stderr, out.stderr


@pytest.mark.slow
def test_service_plan_with_current_moves_less_and_passes_check(tmp_path):
    service = REPO / "instances" / "10b_moe_service.json"
    base = fuzzkit.invoke(["solve", str(service), "--time-limit", "8", "--format", "json",
                           "--output", "scratch.json"], tmp_path)
    assert base.code == 0, base.stderr
    scratch = json.loads((tmp_path / "scratch.json").read_text())
    ep = scratch["degrees"]["ep"]
    experts = len({e for r in scratch["expert_placement"]["0"] for e in r})
    rng = random.Random(5)
    current = {}
    for layer in scratch["expert_placement"]:
        order = list(range(experts))
        rng.shuffle(order)
        per = experts // ep
        current[layer] = [sorted(order[g * per:(g + 1) * per]) for g in range(ep)]
    (tmp_path / "current.json").write_text(json.dumps({"expert_placement": current}))
    out = fuzzkit.invoke(["solve", str(service), "--time-limit", "8", "--current", "current.json",
                          "--format", "json", "--output", "plan.json"], tmp_path)
    assert out.code == 0, out.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    mig = plan["migration"]
    assert mig["reused"] and plan["degrees"] == scratch["degrees"]
    moves = sum(count_moves(np.array(plan["expert_placement"][k]), np.array(v))[0] for k, v in current.items())
    plain = sum(count_moves(np.array(scratch["expert_placement"][k]), np.array(v))[0] for k, v in current.items())
    assert mig["moves"] == moves <= min(plain, mig["scratch_moves"])
    check = fuzzkit.invoke(["check", str(service), "plan.json"], tmp_path)
    assert check.code == 0, check.stdout + check.stderr


def test_replicas_that_overflow_memory_are_refused_not_written(tmp_path):
    # 0.5 GB per GPU: the EP2 plan fits (0.483 GB) but its 2 redundant slots add one 33.6 MB
    # expert per rank in each of 2 layers: 0.483 + 0.067 = 0.550 GB > 0.5 -> exit 3, no file
    doc = mig_doc()
    doc["hardware"]["gpu"]["memory_gb"] = 0.5
    (tmp_path / "mig8.json").write_text(json.dumps(doc))
    out = solve(tmp_path, "--redundant-experts", "2")
    assert out.code == 3, out.stderr
    assert out.stderr.count("\n") == 1 and "memory_per_gpu (0.5504 GB, limit 0.5)" in out.stderr
    assert not (tmp_path / "plan.json").exists()
    assert solve(tmp_path).code == 0  # without the replicas the same instance is solved
