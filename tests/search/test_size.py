"""``moeopt size``'s aggregated scan: the bound that rules a knob group out without a goodput
search really bounds the group's goodput, and the scan's answer equals the smallest count whose
full service search reaches the rate."""

from __future__ import annotations

import time
from functools import cache

import pytest

from optimizer.costs.serving.metrics import goodput_rps
from optimizer.inputs.schema import Instance
from optimizer.search.size import AggSizer
from tests.cpsat.test_disagg_model import tiny_disagg
from tests.cpsat.test_service_solve import UNREACHED_LIMIT_S

# the tests reading ``_every_goodput`` run in one process (pytest-xdist ``--dist loadgroup``)
_SIZER_GROUP = "tiny_disagg_sizer_brute_force"


@cache
def _every_goodput() -> tuple[AggSizer, dict[int, list[tuple[object, list[float]]]]]:
    """The tiny instance's sizer on 2 and 4 GPUs and, per count, each knob group with the
    goodput of every one of its knob tuples (bisection; computed once per process: the two
    tests below read the same figures)."""
    sizer = AggSizer(Instance.model_validate(tiny_disagg()), [2, 4])
    return sizer, {gpus: [(group, [goodput_rps(group.rep, knobs, sizer.load, sizer.slo) for knobs in group.knobs])
                          for group in sizer._groups(gpus)] for gpus in (2, 4)}


@pytest.mark.slow
@pytest.mark.xdist_group(_SIZER_GROUP)
def test_group_bound_is_above_every_group_goodput():
    sizer, goodputs = _every_goodput()
    checked = 0
    for gpus in (2, 4):
        for group, goods in goodputs[gpus]:
            for knobs, good in zip(group.knobs, goods, strict=True):
                assert good <= sizer._bound(group) * (1 + 1e-9), (group.deg, knobs)
                checked += 1
    assert checked > 100


@pytest.mark.slow
def test_scan_answer_is_the_smallest_count_reaching_the_rate():
    inst = Instance.model_validate(tiny_disagg())
    counts = [1, 2, 3, 4, 5, 6]
    sizer = AggSizer(inst, counts)
    best = {}
    for gpus in counts:  # the full answer: every group's widest knobs, goodput by bisection
        best[gpus] = max(goodput_rps(g.rep, g.widest, sizer.load, sizer.slo) for g in sizer._groups(gpus))
    for rate in (30.0, 120.0, 260.0, 10_000.0):
        answer = sizer.size(rate, time.monotonic() + UNREACHED_LIMIT_S)
        expected = next((n for n in counts if best[n] >= rate), None)
        assert answer.num_gpus == expected
        assert answer.status == ("optimal" if expected else "infeasible")
        assert answer.ruled_out == [n for n in counts if expected is None or n < expected]


@pytest.mark.slow
@pytest.mark.xdist_group(_SIZER_GROUP)
def test_ranking_leaves_out_only_groups_that_cannot_serve():
    """The scan predicts only the groups it ranks (decode bound >= the rate, highest decode
    bound first): every group left out must have a goodput below the rate (bisection over
    every knob tuple of the group), and the ranked order must follow the decode bound."""
    sizer, goodputs = _every_goodput()
    left_out = 0
    for gpus in (2, 4):
        groups = [group for group, _ in goodputs[gpus]]
        best = [max(goods) for _, goods in goodputs[gpus]]
        for rate in sorted({*best, *(b * 1.01 for b in best), *(g.decode_bound_rps for g in groups)}):
            ranked = sizer._ranked(gpus, rate)
            bounds = [g.decode_bound_rps for g in ranked]
            assert bounds == sorted(bounds, reverse=True)
            for group, good in zip(groups, best):
                if group not in ranked:
                    assert good < rate, (gpus, group.deg, rate)
                    left_out += 1
    assert left_out > 0  # the bound does rule groups out on this instance


@pytest.mark.slow
def test_quoted_bound_is_the_largest_group_bound_and_stays_a_bound_out_of_time():
    """The bound quoted for a rate no count serves skips groups whose decode bound cannot
    raise it: it must equal the largest of every group's bound; out of time it falls back on
    the largest decode bound, which is still above every group's goodput."""
    inst = Instance.model_validate(tiny_disagg())
    for gpus in (2, 4):
        sizer = AggSizer(inst, [gpus])
        groups = sizer._groups(gpus)
        assert sizer.bound_rps(gpus) == max(min(g.decode_bound_rps, sizer._bound(g)) for g in groups)
        late = AggSizer(inst, [gpus])
        assert late.bound_rps(gpus, deadline=0.0) == max(g.decode_bound_rps for g in late._groups(gpus))
        assert all(g.bound_rps is None for g in late._groups(gpus))  # nothing computed
        assert late.bound_rps(gpus, deadline=0.0) >= sizer.bound_rps(gpus)
