"""A rate no configuration serves: the fast search's infeasibility names the rate and the best
goodput any configuration reaches, the same figure and configuration as the exhaustive
search's (which evaluates every tuple), not a memory limit (it used to say "no knob tuple of
any configuration fits the memory" when every group missed the SLOs at the rate)."""

import copy

import pytest

from optimizer.cpsat.service_solve import solve_service
from optimizer.errors import InfeasibleError
from optimizer.inputs.schema import Instance
from optimizer.search.sweep import with_gpus
from tests.cpsat.test_service_solve import UNREACHED_LIMIT_S
from tests.oracles.tiny_service import TINY


@pytest.mark.slow
def test_an_unservable_rate_names_the_best_goodput():
    doc = copy.deepcopy(TINY)
    doc["workload"]["arrival_rate_rps"] = 1000.0
    inst = with_gpus(Instance.model_validate(doc), 2)
    errors = []
    for exhaustive in (True, False):
        with pytest.raises(InfeasibleError) as caught:
            solve_service(inst, 2, "goodput", UNREACHED_LIMIT_S, exhaustive=exhaustive)
        errors.append(caught.value)
    full, fast = (str(e) for e in errors)
    assert "memory" not in fast
    assert fast.startswith("infeasible: workload.arrival_rate_rps=1000 exceed(s) the best goodput of ")
    assert fast == full  # the same best goodput and configuration as every tuple's
    assert 0.0 < errors[1].payload["bounds"]["best_goodput_rps"] < 1000.0
