"""``moeopt place``: optimality against brute force, the greedy baseline, bounds, load files, CLI.

The brute force enumerates every replica-count vector and every assignment of replicas to
ranks (distinct ranks, equal slots, distinct nodes with spread) in exact fractions and keeps
the lexicographic optimum (max rank load, then cross-node tokens).
"""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from optimizer.cli import main
from optimizer.inputs.load_files import read_loads
from optimizer.place import PlaceSpec, Settings, lower_bound, place, solve_layer
from tests.oracles.eplb_greedy import balancedness as greedy_balancedness
from tests.oracles.eplb_greedy import greedy_place

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"
PLACEMENT_KEYS = {"num_ranks", "num_nodes", "slots_per_rank", "layers", "balancedness_mean", "status", "wall_s"}
LAYER_KEYS = {"layer", "ranks", "max_load", "mean_load", "lower_bound", "balancedness"}


# --------------------------------------------------------------------------- reference

def brute_force(n: list[int], spec: PlaceSpec) -> tuple[Fraction, Fraction]:
    """(least max rank load, least cross-node tokens among those), exact fractions."""
    E, G, K = len(n), spec.num_ranks, spec.num_nodes
    S, per, cap = spec.slots_per_rank(E), G // K, spec.max_replicas()
    best: list = [None, None]

    def count_vectors(i: int, left: int):
        if i == E - 1:
            if 1 <= left <= cap:
                yield (left,)
            return
        for c in range(1, min(cap, left - (E - 1 - i)) + 1):
            for rest in count_vectors(i + 1, left - c):
                yield (c,) + rest

    for r in count_vectors(0, E + spec.redundant):
        w = [Fraction(n[e], r[e]) for e in range(E)]
        slots, load, nodes = [S] * G, [Fraction(0)] * G, [0] * E

        def rec(e: int) -> None:
            if e == E:
                top = max(load)
                cross = sum(Fraction(n[x]) * (1 - Fraction(nodes[x], K)) for x in range(E))
                if best[0] is None or (top, cross) < (best[0], best[1]):
                    best[0], best[1] = top, cross
                return
            for gs in itertools.combinations(range(G), r[e]):
                if any(slots[g] == 0 for g in gs):
                    continue
                used = {g // per for g in gs}
                if spec.spread_replicas and len(used) < len(gs):
                    continue
                for g in gs:
                    slots[g] -= 1
                    load[g] += w[e]
                nodes[e] = len(used)
                if best[0] is None or max(load) <= best[0]:
                    rec(e + 1)
                for g in gs:
                    slots[g] += 1
                    load[g] -= w[e]

        rec(0)
    return best[0], best[1]


def check_plan(n, spec: PlaceSpec, ranks: list[list[int]], max_load: float, abs_tol: float = 0.0) -> None:
    """Slots, replica rules, and the reported max load recomputed from the plan alone."""
    E, G = len(n), spec.num_ranks
    assert len(ranks) == G and all(len(r) == spec.slots_per_rank(E) for r in ranks)
    assert all(len(set(r)) == len(r) for r in ranks), "two replicas of one expert on a rank"
    count = {e: sum(e in r for r in ranks) for e in range(E)}
    assert all(c >= 1 for c in count.values()), "an expert without a replica"
    per = G // spec.num_nodes
    if spec.spread_replicas:
        for e in range(E):
            nodes = [g // per for g in range(G) if e in ranks[g]]
            assert len(nodes) == len(set(nodes)), f"expert {e} twice on a node"
    loads = [sum(n[e] / count[e] for e in r) for r in ranks]
    assert max(loads) == pytest.approx(max_load, rel=1e-9, abs=abs_tol)


SMALL = [  # (experts, ranks, redundant, nodes, spread)
    (6, 3, 0, 1, False), (6, 2, 0, 1, False), (8, 4, 0, 2, False),
    (5, 3, 1, 1, False), (4, 2, 2, 1, False), (6, 3, 3, 1, False),
    (4, 4, 4, 2, False), (4, 4, 4, 2, True), (6, 4, 2, 2, False),
]


@pytest.mark.parametrize("case", SMALL, ids=lambda c: "E{}-G{}-R{}-K{}{}".format(*c[:4], "-spread" * c[4]))
@pytest.mark.parametrize("seed", [0, 1])
def test_optimal_equals_brute_force(case, seed):
    E, G, R, K, spread = case
    spec = PlaceSpec(G, R, K, spread)
    n = [int(x) for x in np.random.default_rng(100 * seed + E * G + R).integers(0, 100, E)]
    n[0] += 1  # never an all-zero layer
    best, best_cross = brute_force(n, spec)
    lp = solve_layer(np.array(n), 0, spec, time_limit_s=5.0)
    assert lp.proven, lp
    assert lp.max_load == pytest.approx(float(best), rel=1e-12)
    assert lower_bound(n, spec) <= float(best) * (1 + 1e-12)
    assert lp.lower_bound <= float(best) * (1 + 1e-12)
    check_plan(n, spec, lp.ranks, lp.max_load)
    if K > 1:
        assert lp.cross_node_tokens == pytest.approx(float(best_cross), abs=1e-6)
    if not spread:  # the baseline knows nothing of nodes
        baseline = greedy_balancedness([float(x) for x in n], greedy_place([float(x) for x in n], G, R))
        assert lp.balancedness >= baseline - 1e-12


def zipf_counts(layers: int, experts: int, tokens: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((layers, experts), dtype=np.int64)
    for lay in range(layers):
        w = (1.0 + rng.permutation(experts)) ** -rng.uniform(0.8, 1.2)
        out[lay] = rng.multinomial(tokens, w / w.sum())
    return out


@pytest.mark.parametrize("experts,ranks,redundant,nodes,spread", [
    (16, 8, 0, 1, False), (32, 8, 8, 2, False), (64, 16, 16, 4, False), (64, 16, 16, 4, True),
    (96, 8, 0, 1, False),
])
@pytest.mark.slow
def test_never_worse_than_greedy_baseline(experts, ranks, redundant, nodes, spread):
    counts = zipf_counts(4, experts, 50_000, seed=experts + redundant)
    spec = PlaceSpec(ranks, redundant, nodes, spread)
    result = place(counts, list(range(4)), spec, Settings(time_limit_s=1.2, workers=1, seed=0))
    for lp, row in zip(result.layers, counts):
        n = [float(x) for x in row]
        check_plan(n, spec, lp.ranks, lp.max_load)
        assert lp.lower_bound <= lp.max_load * (1 + 1e-12)
        assert 0.0 <= lp.gap < 1.0
        if not spread:  # the baseline knows nothing of nodes
            base = greedy_balancedness(n, greedy_place(n, ranks, redundant))
            assert lp.balancedness >= base - 1e-9, (lp.layer, lp.balancedness, base)
    assert result.status in ("optimal", "feasible")
    assert (result.status == "optimal") == all(lp.proven for lp in result.layers)


def test_time_limit_still_returns_a_plan_with_its_bound():
    counts = zipf_counts(2, 256, 200_000, seed=9)
    spec = PlaceSpec(32, 32, 4)
    result = place(counts, [0, 1], spec, Settings(time_limit_s=0.0))
    assert result.status == "feasible"
    for lp, row in zip(result.layers, counts):
        check_plan([float(x) for x in row], spec, lp.ranks, lp.max_load)
        assert lp.mean_load <= lp.lower_bound <= lp.max_load and lp.gap > 0
    doc = result.to_json()
    assert doc["worst_gap"] == pytest.approx(max(lp.gap for lp in result.layers), abs=1e-6)


@pytest.mark.slow
def test_parallel_workers_keep_layer_order():
    counts = zipf_counts(5, 32, 20_000, seed=3)
    ids = [3, 4, 7, 8, 9]
    result = place(counts, ids, PlaceSpec(8, 8), Settings(time_limit_s=2.0, workers=2))
    assert [lp.layer for lp in result.layers] == ids
    for lp, row in zip(result.layers, counts):
        check_plan([float(x) for x in row], PlaceSpec(8, 8), lp.ranks, lp.max_load)


def test_ten_b_without_replicas_is_proven_optimal():
    """16 experts on 8 GPUs (the 10B model), no replicas: proven optimal within the limit
    (its time is benchmarked in bench_place, not asserted here: a busy machine is slow)."""
    from optimizer.cli.common import load_instance
    from optimizer.cli.place import synthetic_counts

    inst = load_instance(str(INSTANCE))
    counts = np.array(synthetic_counts(inst))
    result = place(counts, list(range(len(counts))), PlaceSpec(8), Settings(time_limit_s=10.0))
    assert result.status == "optimal"


# --------------------------------------------------------------------------- load files

GRID = [[5, 0, 3, 1], [0, 0, 0, 0], [2, 2, 2, 9]]  # layer 1 is all zero (a dense layer)


def write(tmp_path: Path, name: str, content) -> str:
    p = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(p, content)
    elif isinstance(content, (dict, list)):
        p.write_text(json.dumps(content))
    else:
        p.write_text(content)
    return str(p)


def test_json_two_and_three_dimensions(tmp_path):
    ids, arr = read_loads(write(tmp_path, "a.json", {"logical_count": GRID}))
    assert ids == [0, 1, 2] and arr.tolist() == GRID
    steps = [GRID, GRID, [[1, 1, 1, 1]] * 3]
    ids, arr = read_loads(write(tmp_path, "b.json", {"logical_count": steps}))
    assert arr.tolist() == (2 * np.array(GRID) + 1).tolist()
    ids, arr = read_loads(write(tmp_path, "c.json", [[1.0, 2.0], [3, 4]]))  # bare, integral floats
    assert arr.tolist() == [[1, 2], [3, 4]]


def test_csv_with_and_without_header(tmp_path):
    rows = "3,0,5\n3,2,3\n3,3,1\n5,0,2\n5,1,2\n5,2,2\n5,3,9\n3,0,1\n"
    for name, text in (("h.csv", "layer,expert,tokens\n" + rows), ("n.csv", rows)):
        ids, arr = read_loads(write(tmp_path, name, text))
        assert ids == [3, 5]  # layer ids as given, missing pairs 0, repeated pairs summed
        assert arr.tolist() == [[6, 0, 3, 1], [2, 2, 2, 9]]


def test_npy_int_float_and_steps(tmp_path):
    _, arr = read_loads(write(tmp_path, "a.npy", np.array(GRID, dtype=np.int32)))
    assert arr.tolist() == GRID
    _, arr = read_loads(write(tmp_path, "b.npy", np.array(GRID, dtype=np.float64)))
    assert arr.tolist() == GRID
    _, arr = read_loads(write(tmp_path, "c.npy", np.array([GRID, GRID], dtype=np.uint16)))
    assert arr.tolist() == (2 * np.array(GRID)).tolist()


def run_place(args):
    return CliRunner().invoke(main, ["place", *args])


def test_zero_layers_skipped_and_ids_kept(tmp_path):
    path = write(tmp_path, "a.json", {"logical_count": GRID})
    res = run_place([f"--loads={path}", "--ep=2", "--format=json", "--time-limit=2"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [lay["layer"] for lay in doc["layers"]] == [0, 2]


BAD = {
    "ragged.json": {"logical_count": [[1, 2, 3], [1, 2]]},
    "negative.json": {"logical_count": [[1, -2], [3, 4]]},
    "fraction.json": {"logical_count": [[1, 2.5], [3, 4]]},
    "boolean.json": {"logical_count": [[1, True], [3, 4]]},
    "text.json": {"logical_count": [[1, "2"], [3, 4]]},
    "flat.json": {"logical_count": [1, 2, 3]},
    "four_d.json": {"logical_count": [[[[1]]]]},
    "nokey.json": {"counts": [[1, 2]]},
    "broken.json": "{not json",
    "fields.csv": "layer,expert,tokens\n0,1\n",
    "negative.csv": "0,0,5\n0,1,-3\n",
    "fraction.csv": "0,0,5\n0,1,2.5\n",
    "header.csv": "layer,gpu,tokens\n0,0,1\n",
    "fraction.npy": np.array([[1.0, 2.5]]),
    "negative.npy": np.array([[1, -1]]),
    "one_d.npy": np.array([1, 2, 3]),
    "strings.npy": np.array([["a", "b"]]),
    "notnpy.npy": "garbage",
    "loads.pt": "x",
    "loads.txt": "1 2 3",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_load_file_exit_2_one_line(tmp_path, name):
    content = BAD[name]
    if name == "notnpy.npy":
        p = tmp_path / name
        p.write_bytes(b"garbage")
        path = str(p)
    else:
        path = write(tmp_path, name, content)
    res = run_place([f"--loads={path}", "--ep=2"])
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moeopt: loads"), res.stderr
    assert "Traceback" not in res.output


def test_missing_file_and_all_zero(tmp_path):
    for path in (str(tmp_path / "none.json"), write(tmp_path, "z.json", [[0, 0], [0, 0]])):
        res = run_place([f"--loads={path}", "--ep=2"])
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("args,needle", [
    (["--ep=3"], "divisible"),                       # 4 experts on 3 ranks
    (["--ep=2", "--redundant=1"], "divisible"),
    (["--ep=4", "--nodes=3", "--redundant=4"], "--nodes"),
    (["--ep=2", "--redundant=2", "--spread-replicas"], "at most 1 replicas"),
    ([], "--ep"),
])
def test_bad_options_exit_2(tmp_path, args, needle):
    path = write(tmp_path, "a.json", [[1, 2, 3, 4]])
    res = run_place([f"--loads={path}", *args])
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr, res.stderr


def test_no_loads_without_instance_exit_2():
    res = run_place(["--ep=2"])
    assert res.exit_code == 2 and "--loads" in res.stderr


def test_experts_must_match_instance(tmp_path):
    path = write(tmp_path, "a.json", [[1, 2, 3, 4]])
    res = run_place([str(INSTANCE), f"--loads={path}", "--ep=2"])
    assert res.exit_code == 2 and "num_experts=16" in res.stderr, res.stderr


# --------------------------------------------------------------------------- CLI output

@pytest.mark.slow
def test_cli_json_keys_and_output_file(tmp_path):
    counts = zipf_counts(3, 16, 10_000, seed=5)
    path = write(tmp_path, "loads.npy", counts)
    out = tmp_path / "placement.json"
    res = run_place([f"--loads={path}", "--ep=4", "--redundant=4", "--nodes=2", "--format=json",
                     f"--output={out}", "--time-limit=3", "--seed=1"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert json.loads(out.read_text()) == doc
    assert PLACEMENT_KEYS <= set(doc)
    assert (doc["num_ranks"], doc["num_nodes"], doc["slots_per_rank"]) == (4, 2, 5)
    assert doc["status"] in ("optimal", "feasible")
    assert len(doc["layers"]) == 3
    for lay, row in zip(doc["layers"], counts):
        assert LAYER_KEYS <= set(lay)
        check_plan([float(x) for x in row], PlaceSpec(4, 4, 2), lay["ranks"], lay["max_load"], 1e-3)
        assert lay["balancedness"] == pytest.approx(lay["mean_load"] / lay["max_load"], abs=1e-5)
        assert lay["lower_bound"] <= lay["max_load"]
    bal = [lay["balancedness"] for lay in doc["layers"]]
    assert doc["balancedness_mean"] == pytest.approx(sum(bal) / len(bal), abs=1e-5)


def test_cli_table_and_instance_defaults():
    res = run_place([str(INSTANCE), "--ep=8", "--time-limit=10"])
    assert res.exit_code == 0, res.output
    assert "16 MoE layers" in res.stdout and "status optimal" in res.stdout
    res = run_place([str(INSTANCE), "--format=json", "--time-limit=3"])
    doc = json.loads(res.stdout)
    # default ep: the largest divisor of 16 experts within 64 GPUs; 8 GPUs per node
    assert (doc["num_ranks"], doc["num_nodes"], doc["slots_per_rank"]) == (16, 2, 1)
