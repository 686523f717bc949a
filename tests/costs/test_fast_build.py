"""The fast paths of the model build agree with the slow, obvious ones they replace."""

from __future__ import annotations

import random

import pytest

from optimizer.costs.config_bounds import hot_load_lower_bound
from optimizer.costs.greedy_placement import greedy_ranks
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.tables import LinkFacts
from optimizer.costs.units import LOAD_SCALE
from optimizer.cpsat.rebalance import rebalance


def _degree_tuples():
    """Every (tp, pp, dp, ep, etp) with tp*dp == etp*ep*edp on up to 64 GPUs, 8 per node
    and 4 per node."""
    for gpn in (4, 8):
        for tp in (1, 2, 4, 8):
            for pp in (1, 2, 3, 4):
                for dp in (1, 2, 3, 4, 8):
                    per_stage = tp * dp
                    for etp in (1, 2, 4):
                        for ep in (1, 2, 4, 8, 16):
                            if per_stage % (etp * ep) == 0 and tp * pp * dp <= 64:
                                yield gpn, Degrees(tp, pp, dp, ep, etp, per_stage // (etp * ep), 1)


def test_link_facts_in_closed_form_match_the_layout():
    """LinkFacts.of_megatron equals LinkFacts.of on the GpuSlot layout for every tuple."""
    count = 0
    for gpn, deg in _degree_tuples():
        assert LinkFacts.of_megatron(deg, gpn) == LinkFacts.of(megatron_layout(deg, gpn)), (gpn, deg)
        count += 1
    assert count > 300  # the loop really covered many layouts


def _hot(loads, ranks):
    return max(sum(loads[x] for x in r) for r in ranks)


@pytest.mark.parametrize("seed", range(20))
def test_rebalance_keeps_a_valid_placement_and_never_worsens_it(seed):
    rng = random.Random(seed)
    ep = rng.choice([2, 4, 8])
    n = ep * rng.choice([2, 4, 8])
    cuts = sorted(rng.randint(0, LOAD_SCALE) for _ in range(n - 1))
    loads = tuple(b - a for a, b in zip([0] + cuts, cuts + [LOAD_SCALE]))  # parts of LOAD_SCALE
    start = greedy_ranks(loads, ep)
    lower = hot_load_lower_bound(loads, ep)
    better = rebalance(loads, start, lower)
    assert sorted(x for r in better for x in r) == list(range(n))  # every expert once
    assert [len(r) for r in better] == [n // ep] * ep  # equal slots kept
    assert lower <= _hot(loads, better) <= _hot(loads, start)


def test_rebalance_fixes_a_placement_by_hand():
    # loads (in 10^4 parts of LOAD_SCALE = 10^6) 50, 45, 5, 0 on 2 ranks of 2: {50, 45} (hot
    # 95) | {5, 0}. Swapping 50 with 0 gives {45, 0} = 45 | {5, 50} = 55 (peak 55); swapping
    # 45 with 0 gives {50, 0} = 50 | {5, 45} = 50 (peak 50), the best swap; the bound is
    # max(ceil(100 / 2), 50 + 0) = 50: optimal, so it stops there.
    loads = (500_000, 450_000, 50_000, 0)
    better = rebalance(loads, [[0, 1], [2, 3]], hot_load_lower_bound(loads, 2))
    assert sorted(map(sorted, better)) == [[0, 3], [1, 2]]
