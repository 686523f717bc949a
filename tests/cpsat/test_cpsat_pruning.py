"""Pruning and the model build against exhaustive enumeration (``tests.oracles.bruteforce``).

- ``pruning.min_hot_load`` / ``exact_hot_loads``: the per-layer hot-load bound is never above
  the enumerated optimum, the placement kept is a valid one (every expert once, equal slots)
  whose hot load is never below it, and a bound the search proved equals it.
- ``DeploymentModel``: the configuration bounds it prunes with are never above the
  enumerated best of their configuration, and the cutoff never drops every optimal one.
"""

from __future__ import annotations

import random

import pytest

from optimizer.costs.config_bounds import hot_load_lower_bound
from optimizer.costs.units import LOAD_SCALE
from optimizer.cpsat.model import DeploymentModel, build_context
from optimizer.cpsat.pruning import exact_hot_loads, min_hot_load
from optimizer.errors import InputError
from tests.cpsat.test_bruteforce import random_instance
from tests.oracles import bruteforce


def random_loads(rng: random.Random, experts: int) -> tuple[int, ...]:
    """Skewed loads in parts of LOAD_SCALE summing to (about) LOAD_SCALE."""
    weights = [rng.random() ** 3 + 0.01 for _ in range(experts)]
    total = sum(weights)
    return tuple(int(w / total * LOAD_SCALE) for w in weights)


CASES = [(seed, experts, ep) for seed in range(12) for experts, ep in ((4, 2), (6, 2), (6, 3), (8, 2), (8, 4))]


@pytest.mark.parametrize("seed, experts, ep", CASES)
def test_per_layer_bound_never_above_the_enumerated_optimum(seed, experts, ep):
    loads = random_loads(random.Random(seed), experts)
    optimum, _ = bruteforce.min_hot_enumerated(loads, ep)
    assert hot_load_lower_bound(loads, ep) <= optimum
    found = min_hot_load.__wrapped__(loads, ep, 1.0)  # uncached: this search, now
    assert found.lower <= optimum <= found.upper
    assert sorted(x for rank in found.ranks for x in rank) == list(range(experts))
    assert all(len(rank) == experts // ep for rank in found.ranks)
    if found.lower == found.upper:  # proven: exactly the optimum
        assert found.upper == optimum


def test_exact_hot_loads_within_a_tiny_budget_keep_valid_bounds():
    """With almost no search budget most layers keep the greedy placement and the cheap
    bound: still lower <= optimum <= upper for every layer and EP degree."""
    rng = random.Random(7)
    layers = [random_loads(rng, 8) for _ in range(6)]
    table = exact_hot_loads(layers, [1, 2, 4, 8], budget=0.05)
    for ep, rows in table.items():
        for loads, hot in zip(layers, rows):
            optimum, _ = bruteforce.min_hot_enumerated(loads, ep)
            assert hot.lower <= optimum <= hot.upper, (ep, loads)


@pytest.mark.parametrize("seed", range(0, 40, 2))
def test_model_bounds_never_above_the_enumerated_best(seed):
    inst = random_instance(seed)
    gpus = inst.hardware.num_gpus
    try:
        dm = DeploymentModel(build_context(inst, gpus), cutoff="objective")
    except InputError as exc:  # no admissible configuration: an input error, not this test's
        pytest.skip(f"no model: {exc}")
    bests, _ = bruteforce.per_config_best(inst, gpus)
    best_of = {b.deg: b for b in bests}
    for config, bound in zip(dm.data.cfgs, dm.bounds):
        if config.deg in best_of:
            assert bound.objective_ns <= best_of[config.deg].objective_ns, config.deg
            assert bound.makespan_ns <= best_of[config.deg].makespan_ns, config.deg
    reference = bruteforce.brute_force(inst, gpus)
    if reference is None:
        return
    kept = {config.deg for config in dm.data.cfgs}
    assert kept & reference["optimal_degrees"], "the cutoff dropped every optimal configuration"
    if dm.greedy is not None:  # the greedy plan is feasible: never better than the optimum
        assert dm.greedy.objective_ns >= reference["objective_ns"]
