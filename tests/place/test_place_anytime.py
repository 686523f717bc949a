"""The first placement of every layer: all layers packed at once (``pack_many``) give exactly
``pack``'s plans, and at a zero time limit ``place`` is at least as balanced as the
EPLB-style greedy oracle (``tests/oracles/eplb_greedy.py``), deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.place import PlaceSpec, Settings, place
from optimizer.place.bounds import min_max_replicas
from optimizer.place.packing import pack, pack_many
from tests.oracles.eplb_greedy import balancedness, greedy_place


def _loads(rng, layers: int, experts: int, heavy: bool) -> np.ndarray:
    if heavy:
        w = (1.0 + rng.permutation(experts)) ** -1.1 * rng.lognormal(0.0, 0.2, (layers, experts))
    else:
        w = rng.lognormal(0.0, 0.6, (layers, experts))
    return np.array([rng.multinomial(20_000, row / row.sum()) for row in w], dtype=np.int64)


SHAPES = [(16, 4, 0, 1, False), (16, 4, 4, 2, False), (32, 8, 8, 2, True), (24, 6, 6, 3, False),
          (64, 16, 16, 4, True), (12, 4, 8, 2, True), (8, 8, 8, 4, False), (8, 8, 24, 2, False)]


@pytest.mark.parametrize("experts,ranks,redundant,nodes,spread", SHAPES)
def test_pack_many_equals_pack_layer_by_layer(experts, ranks, redundant, nodes, spread):
    rng = np.random.default_rng(experts * 100 + redundant)
    spec = PlaceSpec(ranks, redundant, nodes, spread_replicas=spread)
    S = spec.slots_per_rank(experts)
    for heavy in (False, True):
        n = _loads(rng, 12, experts, heavy).astype(np.float64)
        count = np.array([min_max_replicas(row, experts + redundant, spec.max_replicas()) for row in n])
        plans, done = pack_many(n, count, spec, S)
        for layer in range(len(n)):
            one, _ = pack(n[layer], count[layer], spec, S)
            if done[layer]:
                assert np.array_equal(np.asarray(one), plans[layer]), (heavy, layer)
            else:  # pack needed its freeing move there: the caller packs the layer itself
                assert np.asarray(one).shape == (ranks, S)


def test_pack_many_by_hand():
    """Loads 6, 1, 1, 1 on 2 ranks with 2 redundant slots (S = 3). Replicas: at most
    min(G, R + 1) = 2 each; the first extra slot goes to expert 0 (6 > 1), the second to
    the heaviest per-replica load left, 1/1 of expert 1 (ties: lower id): counts 2, 2, 1, 1,
    per replica 3, 0.5, 1, 1. Heaviest first: 0 -> r0 (3), 0 -> r1 (3; r0 holds it),
    2 -> r0 (4; tie to the lower rank), 3 -> r1 (4), 1 -> r0 (4.5), 1 -> r1 (4.5)."""
    spec = PlaceSpec(2, 2, 1)
    n = np.array([[6.0, 1.0, 1.0, 1.0]])
    count = np.array([min_max_replicas(n[0], 6, spec.max_replicas())])
    assert count.tolist() == [[2, 2, 1, 1]]
    plans, done = pack_many(n, count, spec, 3)
    assert done.tolist() == [True]
    assert plans[0].tolist() == [[0, 2, 1], [0, 3, 1]]


@pytest.mark.parametrize("experts,ranks,redundant,nodes,spread", [s for s in SHAPES if not s[4]])
def test_first_placement_at_least_as_balanced_as_the_eplb_greedy(experts, ranks, redundant, nodes, spread):
    rng = np.random.default_rng(7 + experts + ranks)
    spec = PlaceSpec(ranks, redundant, nodes)
    for heavy in (False, True):
        counts = _loads(rng, 8, experts, heavy)
        first = place(counts, list(range(len(counts))), spec, Settings(time_limit_s=0.0))
        again = place(counts, list(range(len(counts))), spec, Settings(time_limit_s=0.0))
        assert [lp.ranks for lp in first.layers] == [lp.ranks for lp in again.layers]  # deterministic
        for row, lp in zip(counts.tolist(), first.layers):
            eplb = balancedness(row, greedy_place(row, ranks, redundant))
            assert lp.balancedness >= eplb * (1 - 1e-12)


# --- progress: layers done, and the bar of `moeopt place` on a terminal only ---

@pytest.mark.parametrize("workers", [1, 2])
def test_progress_counts_every_layer_once(workers):
    counts = _loads(np.random.default_rng(3), 5, 16, False)
    seen = []
    place(counts, list(range(5)), PlaceSpec(4), Settings(time_limit_s=0.5, workers=workers), progress=seen.append)
    assert sum(seen) == 5 and all(k >= 1 for k in seen)


def _cli_place(tmp_path, monkeypatch, terminal: bool):
    from click.testing import CliRunner

    import optimizer.cli.common as common
    import optimizer.cli.place as place_cli
    from optimizer.cli import main
    path = tmp_path / "loads.npy"
    np.save(path, _loads(np.random.default_rng(4), 3, 16, True))
    monkeypatch.setattr(common, "on_terminal", lambda: terminal)
    monkeypatch.setattr(place_cli, "BAR_AFTER_S", 0.0)  # draw at once, not after 2 s
    return CliRunner().invoke(main, ["place", "--loads", str(path), "--ep", "4", "--time-limit", "0.5"])


def test_the_layer_bar_is_drawn_on_a_terminal(tmp_path, monkeypatch):
    res = _cli_place(tmp_path, monkeypatch, terminal=True)
    assert res.exit_code == 0, res.stderr
    assert "place: MoE layers" in res.stderr and "/3 " in res.stderr  # the bar of 3 layers


def test_no_bar_off_a_terminal(tmp_path, monkeypatch):
    res = _cli_place(tmp_path, monkeypatch, terminal=False)
    assert res.exit_code == 0 and res.stderr == ""
    assert "balancedness mean" in res.stdout
