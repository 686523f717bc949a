"""``moeopt solve --mode agg`` on a service uses the one-tuple-per-knob-group search
(``service_solve.widest_search``); the former search evaluating every tuple of every group
(``exhaustive=True``) must give the same plan: same degrees, same knobs, same proven scores,
on several tiny instances and both objectives."""

import copy

import pytest

from optimizer.cpsat.service_solve import solve_service
from optimizer.inputs.schema import Instance
from optimizer.search.sweep import with_gpus
from tests.cpsat.test_disagg_model import tiny_disagg
from tests.cpsat.test_service_solve import UNREACHED_LIMIT_S
from tests.oracles.tiny_service import TINY


def _variants():
    tight = copy.deepcopy(TINY)  # SLOs near the best TPOT/TTFT reached: many groups miss them
    tight["name"] = "tiny_tight"
    tight["requirements"] = {"max_ttft_s": 0.004, "max_tpot_ms": 0.165}
    target = tiny_disagg()
    target["name"] = "tiny_target"
    target["requirements"]["min_goodput_rps"] = 40.0
    return [(TINY, 2), (TINY, 4), (tiny_disagg(), 8), (tight, 4), (target, 8)]


# one test per (variant, objective), so that pytest-xdist spreads them over its workers: the
# exhaustive search of the tight variant alone evaluates about 2,200 tuples (2-3 min of CPU)
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["goodput", "throughput"])
@pytest.mark.parametrize("variant", range(len(_variants())))
def test_fast_search_gives_the_exhaustive_plan(variant, objective):
    doc, gpus = _variants()[variant]
    inst = with_gpus(Instance.model_validate(doc), gpus)
    full = solve_service(inst, gpus, objective, UNREACHED_LIMIT_S, exhaustive=True)
    fast = solve_service(inst, gpus, objective, UNREACHED_LIMIT_S)
    name = f"{doc['name']} on {gpus}"
    assert full.status == fast.status == "optimal", name
    assert (fast.chosen.deg, fast.chosen.knobs) == (full.chosen.deg, full.chosen.knobs), name
    assert [p.value for p in fast.choice.phases] == [p.value for p in full.choice.phases], name
    assert fast.chosen.goodput_rps == full.chosen.goodput_rps, name
    assert fast.plan == full.plan, name
    # one tuple per group evaluated, never more candidates than the full search
    assert len(fast.searched.candidates) <= len(full.searched.candidates), name
