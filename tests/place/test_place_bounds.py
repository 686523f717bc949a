"""The placement lower bound (``optimizer.place.bounds``): never above the brute-force
optimum, and tighter than the plain ``max(mean, w* + fill)`` where the proof says so."""

from __future__ import annotations

import random

import numpy as np
import pytest

from optimizer.place import PlaceSpec, lower_bound
from optimizer.place.bounds import fewest_heavier, least_item
from tests.place.test_place import brute_force


@pytest.mark.slow
def test_bound_never_exceeds_brute_force_optimum():
    rng = random.Random(11)
    checked = 0
    while checked < 120:
        G, S = rng.choice([2, 3]), rng.choice([2, 3])
        R = rng.randint(0, 3)
        E = G * S - R
        if E < 2:
            continue
        n = [rng.choice([1, 2, 5, 10, 30, 100]) * rng.randint(0, 5) for _ in range(E)]
        spec = PlaceSpec(G, R)
        opt, _ = brute_force(n, spec)
        assert lower_bound(n, spec) <= float(opt) * (1 + 1e-12), (n, G, R)
        checked += 1


def test_fill_counts_at_most_r_plus_one_replicas():
    # n = [10, 10, 50, 50, 30], 3 ranks, R = 1, S = 2: the min-max counts give expert 2 two
    # replicas, w* = 50 (expert 3). The other slot of expert 3's rank holds another expert
    # with at most R + 1 = 2 replicas: >= 10 / 2 = 5, so the bound is 55 (with the old
    # max_replicas = 3 it was 50 + 10/3 = 53.33). By hand the optimum is 55: expert 0 in
    # two replicas of 5, ranks {2, 0}, {3, 0}, {4, 1} = 55, 55, 40 (any other doubling
    # leaves a 50 beside a 10 or more: 60). Brute force agrees.
    n = [10, 10, 50, 50, 30]
    spec = PlaceSpec(3, 1)
    assert lower_bound(n, spec) == 55.0
    opt, _ = brute_force(n, spec)
    assert float(opt) == 55.0


def test_fewest_heavier_by_hand():
    # n = [100, 60, 40, 10], R = 2, cap 4, t = 35: experts above t are 100, 60, 40; lifting
    # them below t needs ceil(n/t) - 1 = 2, 1, 1 extra replicas; with 2 extras the two
    # cheapest (60, 40) are lifted, so 3 - 2 = 1 replica stays heavier than 35.
    n = np.array([100.0, 60.0, 40.0, 10.0])
    assert fewest_heavier(n, 35.0, 2, 4) == 1
    # with cap 1 nothing can be lifted: 3 items above 35
    assert fewest_heavier(n, 35.0, 2, 1) == 3
    # L_1 (the least possible heaviest replica) with R = 2, cap 4: 100 split in 3 = 33.3
    # (60 stays whole -> 60) or 100/2 = 50 and 60/2 = 30 -> 50: min max = 50
    assert abs(least_item(n, 1, 2, 4) - 50.0) < 1e-6


def test_pigeonhole_with_replicas_proves_the_optimum():
    # n = [10, 10, 10, 10, 2], 3 ranks, R = 1 (S = 2); mean 42 / 3 = 14 and w* + fill =
    # 10 + 2/2 = 11, so the plain bound is 14. Pigeonhole j = 1: the G + 1 = 4 heaviest of
    # the 6 replicas put two on one rank. For t < 10 four experts exceed t and one extra
    # replica lifts one 10 (ceil(10/t) - 1 = 1 for t >= 5), so >= 3 replicas stay above t:
    # L_3 = 10; for t < 5 lifting a 10 costs 2 extras: 4 stay above t, L_4 = 5. Bound
    # 10 + 5 = 15. By hand the optimum is 15: split a 10 into 5 + 5, ranks {10, 5}, {10, 5},
    # {10, 2}. Brute force agrees.
    n = [10, 10, 10, 10, 2]
    spec = PlaceSpec(3, 1)
    opt, _ = brute_force(n, spec)
    assert float(opt) == 15.0
    assert abs(lower_bound(n, spec) - 15.0) <= 1e-9
