"""Rebalancing with migration cost (``optimizer.place.migrate``) against brute force: every
placement of a small layer is enumerated (each rank an S-subset of experts, every expert
somewhere), loads computed exactly with fractions."""

from __future__ import annotations

import random
import time
from fractions import Fraction
from itertools import combinations, product

import numpy as np
import pytest

from optimizer.place import PlaceSpec, solve_layer
from optimizer.place.migrate import count_moves, migrate_layer


def all_plans(E: int, G: int, S: int):
    """Every plan: G ranks, each a set of S distinct experts, every expert on some rank."""
    for ranks in product(combinations(range(E), S), repeat=G):
        if len({e for r in ranks for e in r}) == E:
            yield ranks


def exact_max(n, ranks) -> Fraction:
    count = {}
    for r in ranks:
        for e in r:
            count[e] = count.get(e, 0) + 1
    return max(sum(Fraction(n[e], count[e]) for e in r) for r in ranks)


def brute_moves(n, current, G, S, tolerance, node=None, objective="moves"):
    """(best max load, least cost among plans within tolerance), by enumeration. Cost as
    the model's: moves, or moves + (G*S + 1) * inter-node moves."""
    plans = list(all_plans(len(n), G, S))
    best = min(exact_max(n, p) for p in plans)
    cap = best * (1 + Fraction(tolerance).limit_denominator(10**9))
    held = {(e, g) for g, r in enumerate(current) for e in r}
    on_node = {(e, node[g]) for g, r in enumerate(current) for e in r} if node is not None else set()
    least = None
    for p in plans:
        if exact_max(n, p) > cap:
            continue
        moves = sum((e, g) not in held for g, r in enumerate(p) for e in r)
        inter = sum((e, g) not in held and (e, node[g]) not in on_node
                    for g, r in enumerate(p) for e in r) if node is not None else 0
        cost = moves if objective == "moves" else moves + (G * S + 1) * inter
        least = cost if least is None else min(least, cost)
    return best, least


def _case(rng: random.Random, E: int, G: int, S: int):
    n = [rng.randint(1, 100) for _ in range(E)]
    plans = list(all_plans(E, G, S))
    current = np.array(plans[rng.randrange(len(plans))], dtype=np.int64)
    return np.array(n, dtype=np.int64), current


@pytest.mark.parametrize("E,G,R,tol", [(6, 3, 0, 0.0), (6, 3, 0, 0.05), (5, 3, 1, 0.0),
                                       (4, 3, 2, 0.1), (6, 3, 3, 0.02)])
def test_moves_equal_brute_force(E, G, R, tol):
    rng = random.Random(1000 * E + 10 * R + int(100 * tol))
    S = (E + R) // G
    spec = PlaceSpec(G, R)
    for trial in range(4):
        n, current = _case(rng, E, G, S)
        best = solve_layer(n, 0, spec, 10.0)
        assert best.proven
        got = migrate_layer(n, current, np.array(best.ranks), spec, tol, "moves",
                            time.monotonic() + 20, seed=trial)
        opt, least = brute_moves(n.tolist(), current.tolist(), G, S, tol)
        assert abs(best.max_load - float(opt)) <= 1e-9 * float(opt)
        assert got.moves == least, (n, current, got.ranks)
        assert got.proven
        assert got.max_load <= float(opt) * (1 + tol) * (1 + 1e-12)
        assert count_moves(got.ranks, current)[0] == got.moves
        assert sorted(set(got.ranks.ravel().tolist())) == list(range(E))


def test_inter_node_objective_equals_brute_force():
    """4 ranks in 2 nodes: inter-node moves first, then moves, as enumerated."""
    rng = random.Random(7)
    E, G, R = 4, 4, 4
    S = (E + R) // G
    spec = PlaceSpec(G, R, num_nodes=2)
    node = [0, 0, 1, 1]
    for trial in range(3):
        n, current = _case(rng, E, G, S)
        best = solve_layer(n, 0, spec, 10.0)
        got = migrate_layer(n, current, np.array(best.ranks), spec, 0.05, "inter-node",
                            time.monotonic() + 20, seed=trial)
        _, least = brute_moves(n.tolist(), current.tolist(), G, S, 0.05, node, "inter-node")
        assert got.moves + (G * S + 1) * got.inter_node_moves == least


@pytest.mark.slow
def test_tolerance_zero_keeps_best_balance_and_never_more_moves_than_scratch():
    rng = np.random.default_rng(3)
    E, G, R = 32, 8, 8
    spec = PlaceSpec(G, R)
    for trial in range(3):
        n = rng.integers(1, 5000, E)
        current = np.arange(E + R).reshape(G, -1) % E     # experts 0..7 replicated, in order
        best = solve_layer(n, 0, spec, 2.0, seed=trial)
        got = migrate_layer(n, current, np.array(best.ranks), spec, 0.0, "moves",
                            time.monotonic() + 30, seed=trial, deterministic_s=2.0)
        assert got.max_load <= best.max_load * (1 + 1e-12)
        raw_moves = count_moves(np.array(best.ranks), current)[0]
        assert got.moves <= got.scratch_moves <= raw_moves


def test_current_already_within_tolerance_moves_nothing():
    # loads 10, 10, 10, 10 on 2 ranks: any 2+2 split has max 20 = the optimum
    n = np.array([10, 10, 10, 10])
    current = np.array([[0, 3], [1, 2]])
    best = solve_layer(n, 0, PlaceSpec(2), 1.0)
    got = migrate_layer(n, current, np.array(best.ranks), PlaceSpec(2), 0.0, "moves", time.monotonic() + 5)
    assert got.moves == 0 and got.proven and got.max_load == 20.0


# --------------------------------------------------------------------------- CLI

def _write_loads(tmp_path, seed: int, name: str):
    rng = np.random.default_rng(seed)
    counts = rng.integers(100, 5000, (2, 16))
    path = tmp_path / name
    np.save(path, counts)
    return path, counts


def _place(args):
    from click.testing import CliRunner

    from optimizer.cli import main
    return CliRunner().invoke(main, ["place", *args])


@pytest.mark.slow
def test_cli_current_in_three_formats_gives_the_same_moves(tmp_path):
    import json

    old, _ = _write_loads(tmp_path, 1, "old.npy")
    new, _ = _write_loads(tmp_path, 2, "new.npy")
    common = ["--ep", "4", "--redundant", "4", "--nodes", "2", "--seed", "3", "--effort", "0.5"]
    first = _place(["--loads", str(old), *common, "--time-limit", "20", "--format", "json"])
    assert first.exit_code == 0, first.output
    cur = json.loads(first.output)
    moeopt_path = tmp_path / "cur.json"
    moeopt_path.write_text(first.output)
    # the same placement as SGLang's physical_to_logical_map (slot i on rank i // S) and as
    # a plan file's expert_placement
    sglang_path = tmp_path / "sglang.json"
    sglang_path.write_text(json.dumps({"physical_to_logical_map": [
        [e for rank in lay["ranks"] for e in rank] for lay in cur["layers"]]}))
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps({"degrees": {"ep": 4}, "expert_placement": {
        str(lay["layer"]): lay["ranks"] for lay in cur["layers"]}}))
    docs = []
    for path in (moeopt_path, sglang_path, plan_path):
        res = _place(["--loads", str(new), *common, "--time-limit", "40", "--format", "json", "--current", str(path),
                      "--tolerance", "0.02", "--expert-bytes", "1000"])
        assert res.exit_code == 0, res.output
        docs.append(json.loads(res.output))
    moves = [d["migration"]["moves"] for d in docs]
    assert moves[0] == moves[1] == moves[2]
    m = docs[0]["migration"]
    assert m["moves"] <= m["scratch_moves"]
    assert m["moved_bytes"] == 1000 * m["moves"]
    assert m["intra_node_bytes"] + m["inter_node_bytes"] == m["moved_bytes"]
    assert sum(m["received_moves_per_rank"]) == sum(m["sent_moves_per_rank"]) == m["moves"]
    for lay, old_lay in zip(docs[0]["layers"], cur["layers"]):
        mig = lay["migration"]
        assert lay["max_load"] <= mig["best_max_load"] * 1.02 + 1e-3
        kept = sum(len(set(a) & set(b)) for a, b in zip(lay["ranks"], old_lay["ranks"]))
        assert mig["moves"] == 4 * 5 - kept   # 20 slots per layer, counted independently


@pytest.mark.slow
def test_cli_effort_repeats_the_plan(tmp_path):
    loads, _ = _write_loads(tmp_path, 5, "loads.npy")
    args = ["--loads", str(loads), "--ep", "4", "--redundant", "4", "--effort", "0.2", "--seed", "9",
            "--time-limit", "60", "--format", "json"]
    import json
    runs = [json.loads(_place(args).output) for _ in range(2)]
    assert [lay["ranks"] for lay in runs[0]["layers"]] == [lay["ranks"] for lay in runs[1]["layers"]]


def test_cli_current_missing_layer_is_one_line_exit_2(tmp_path):
    import json

    loads, _ = _write_loads(tmp_path, 5, "loads.npy")
    cur = tmp_path / "cur.json"
    cur.write_text(json.dumps({"layers": [{"layer": 0, "ranks": [[0, 1, 2, 3]] * 4}]}))
    res = _place(["--loads", str(loads), "--ep", "4", "--current", str(cur), "--time-limit", "1"])
    assert res.exit_code == 2
    assert "layer 0" in res.output and "expert" in res.output  # rank 0 holds 4 of 16: not all placed
    assert "Traceback" not in res.output


def test_repair_meets_the_target_with_the_given_counts():
    """The repair heuristic alone: its plan has exactly the requested replica counts, every
    rank within the target (loads recomputed here), and is a valid plan."""
    from optimizer.place.repair import repair

    rng = np.random.default_rng(8)
    E, G, R = 64, 8, 8
    spec = PlaceSpec(G, R, num_nodes=2)
    w = rng.lognormal(0, 0.6, E)
    old = rng.multinomial(50_000, w / w.sum())
    drifted = w * rng.lognormal(0, 0.2, E)
    new = rng.multinomial(50_000, drifted / drifted.sum())
    current = np.array(solve_layer(old, 0, spec, 2.0, seed=1).ranks)
    best = np.array(solve_layer(new, 0, spec, 2.0, seed=1).ranks)
    count = np.bincount(best.ravel(), minlength=E)
    best_max = max(sum(new[e] / count[e] for e in row) for row in best.tolist())
    plan = repair(new, current, count, spec, best_max * 1.01, time.monotonic() + 30)
    assert plan is not None
    assert (np.bincount(plan.ravel(), minlength=E) == count).all()
    assert all(len(set(row)) == len(row) for row in plan.tolist())
    assert max(sum(new[e] / count[e] for e in row) for row in plan.tolist()) <= best_max * 1.01 * (1 + 1e-12)


def test_effort_makes_the_local_search_repeatable():
    """A 256-expert, 64-rank layer (the local-search path): with ``effort`` and a fixed seed
    two runs give the same plan; the generous time limit is only a hard stop."""
    rng = np.random.default_rng(12)
    w = rng.lognormal(0, 0.6, 256)
    n = rng.multinomial(131_072, w / w.sum())
    spec = PlaceSpec(64, 64, num_nodes=8)
    runs = [solve_layer(n, 3, spec, 120.0, seed=5, effort=0.5) for _ in range(2)]
    assert runs[0].method == "search"
    assert runs[0].ranks == runs[1].ranks and runs[0].max_load == runs[1].max_load
    assert not runs[0].time_limit_reached


# --- the fast repair: replica counts near the current ones, exchanges, then fewer moves ---

def test_nearest_counts_by_hand():
    """Loads 12, 4, 2, 1 with counts 1, 2, 2, 1 in service and target 6: expert 0 needs
    ceil(12 / 6) = 2 replicas. Experts 1 and 2 can spare one (2 > their need of 1); after
    giving it up their per-replica loads would be 4 / 1 = 4 and 2 / 1 = 2, so expert 2 gives
    it: counts 2, 2, 1, 1 (one changed pair of counts)."""
    from optimizer.place.migrate import nearest_counts
    out = nearest_counts(np.array([12.0, 4, 2, 1]), np.array([1, 2, 2, 1]), 6.0, cap=3)
    assert out.tolist() == [2, 2, 1, 1]
    assert nearest_counts(np.array([12.0, 4, 2, 1]), np.array([1, 2, 2, 1]), 6.0, cap=1) is None  # 2 > cap


def test_repair_exchange_by_hand():
    """Loads 5, 4, 1, 1 on 2 ranks of 2, current {0, 1} = 9 | {2, 3} = 2, target 6. Every
    exchange of the hot rank's items with the cool rank's gives loads {5, 6} (5 + 1 | 4 + 1 or
    4 + 1 | 5 + 1): all within 6, all cost 2 moves, peak 6; the first in order (expert 0 with
    expert 2) is taken: {2, 1} = 5 | {0, 3} = 6, 2 moves, and no exchange can save one."""
    from optimizer.place.repair import repair
    n = np.array([5, 4, 1, 1])
    current = np.array([[0, 1], [2, 3]])
    plan = repair(n, current, np.ones(4, dtype=np.int64), PlaceSpec(2), 6.0, time.monotonic() + 10)
    assert plan.tolist() == [[2, 1], [0, 3]]
    assert count_moves(plan, current)[0] == 2


@pytest.mark.parametrize("seed", range(12))
def test_repair_meets_the_target_with_no_more_moves_than_needed_by_brute_force(seed):
    """On small layers (a plan within 5 % of the best always exists) the repaired plan
    meets its target, holds every expert once on ranks of S, and moves no fewer experts
    than the brute-force minimum (so the counting is honest)."""
    from optimizer.place.repair import repair
    rng = random.Random(100 + seed)
    E, G, S = 6, 3, 2
    n, current = _case(rng, E, G, S)
    best, least = brute_moves(n.tolist(), current.tolist(), G, S, 0.05)
    target = float(best) * 1.05
    plan = repair(n, current, np.ones(E, dtype=np.int64), PlaceSpec(G), target, time.monotonic() + 10, seed)
    assert plan is not None
    assert sorted(plan.ravel().tolist()) == list(range(E)) and plan.shape == (G, S)
    assert max(sum(n[e] for e in r) for r in plan) <= target * (1 + 1e-12)
    assert count_moves(plan, current)[0] >= least
