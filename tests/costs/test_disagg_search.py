"""The prefill enumeration skips goodput searches whose candidate a capacity bound shows to be
dominated: the candidates it keeps must be exactly those of evaluating every (configuration,
knob tuple, transfer class) and dropping the dominated ones, in the same order. On random
synthetic figures with ties and several candidates on each front, and end to end on the tiny
instance (where each front has one candidate)."""

from __future__ import annotations

import math
import random

import pytest

from optimizer.costs.layout import Degrees
from optimizer.costs.serving.disagg import (
    INTER_NODE,
    INTRA_NODE,
    PrefillCandidate,
    TransferClass,
    evaluate_prefill,
    prefill_knobs,
    prefill_load,
    prompt_kv_load,
)
from optimizer.costs.serving.disagg_search import (
    PrefillEntry,
    _replica,
    _undominated_prefill,
    pool_candidates,
    replica_sizes,
    searched_skipping_dominated,
    transfer_classes,
)
from optimizer.costs.serving.replica import even_stages, replica_memory, service_degrees
from optimizer.cpsat.disagg_solve import disagg_inputs
from optimizer.inputs.schema import Instance
from tests.cpsat.test_disagg_model import tiny_disagg

DEG = Degrees(1, 1, 1, 1, 1, 1, 1)


def _synthetic(rnd: random.Random, rate_rps: float | None):
    """Entries of random capacities (ties: whole numbers) and an ``evaluate`` giving each
    (entry, class) a goodput at most the capacity (ties: halves), its fewest replicas at the
    rate as the real search gives them (non-increasing in the goodput)."""
    classes = [TransferClass(INTRA_NODE, 1), TransferClass(INTER_NODE, 1), TransferClass(INTER_NODE, 2)]
    entries, goodputs = [], {}
    for i in range(rnd.randint(1, 30)):
        capacity = float(rnd.randint(1, 12))
        mine = {c: 0.1 * classes.index(c) for c in rnd.sample(classes, rnd.randint(1, 3))}
        entries.append(PrefillEntry(capacity, rnd.choice((1, 2)), mine, i))
        for c in mine:
            goodputs[(i, c)] = min(capacity, math.floor(rnd.uniform(0.0, capacity) * 2) / 2)

    def evaluate(entry, live):
        out = []
        for cls, seconds in sorted(live.items()):
            good = goodputs[(entry.of, cls)]
            n = 0 if rate_rps is None else (None if good <= 0 else math.ceil(rate_rps / good))
            out.append(PrefillCandidate(DEG, entry.of, entry.gpus, cls, seconds, good, entry.capacity_rps, n, 10))
        return out
    return entries, evaluate


@pytest.mark.parametrize("seed", range(200))
def test_skipping_equals_evaluating_every_candidate_on_random_figures(seed):
    rnd = random.Random(seed)
    entries, evaluate = _synthetic(rnd, rnd.choice((None, 7.0)))
    every = [cand for entry in entries for cand in evaluate(entry, entry.classes)]
    found, skipped = searched_skipping_dominated(entries, evaluate)
    assert _undominated_prefill(found) == _undominated_prefill(every)
    assert len(found) + skipped == len(every)


def test_random_fronts_hold_several_candidates_and_searches_are_skipped():
    """The property above is not vacuous: fronts of several candidates occur, and skips."""
    several = skips = 0
    for seed in range(200):
        rnd = random.Random(seed)
        entries, evaluate = _synthetic(rnd, rnd.choice((None, 7.0)))
        kept = _undominated_prefill([cand for entry in entries for cand in evaluate(entry, entry.classes)])
        groups = [(c.gpus, c.transfer) for c in kept]
        several += any(groups.count(g) > 1 for g in groups)
        skips += searched_skipping_dominated(entries, evaluate)[1] > 0
    assert several > 20 and skips > 100


@pytest.mark.slow
@pytest.mark.parametrize("rate_rps", [None, 30.0])
def test_skipped_prefill_searches_change_no_candidate(rate_rps):
    inst = Instance.model_validate(tiny_disagg())
    budget = inst.hardware.num_gpus
    shared = disagg_inputs(inst, budget)
    load, slo = shared.load, shared.slo
    found = pool_candidates(inst, budget, load, slo, rate_rps, shared.loads, shared.ranks_by_ep)
    every = []  # every candidate, every goodput searched (no skipping)
    for g in replica_sizes(inst.hardware.gpus_per_node, budget):
        for deg in service_degrees(inst, g):
            classes = transfer_classes(inst, g, _decode_sizes(inst, budget, load, shared), budget,
                                       found.kv_transfer_bytes)
            if not classes:
                continue
            mem = replica_memory(inst, deg, even_stages(inst.model.num_layers, deg.pp), prompt_kv_load(load))
            rep, _ = _replica(inst, deg, prefill_load(load), shared.loads, shared.ranks_by_ep)
            for k in prefill_knobs(mem, deg.pp, load.prompt_tokens, inst.search.max_micro_batches):
                every += evaluate_prefill(deg, k, rep, load, slo, rate_rps, classes)
    assert found.decode and len(every) > 20
    assert found.prefill_skipped > 0  # the bound does skip searches here
    assert found.evaluated - len(found.decode) < len(every)
    assert found.prefill == _undominated_prefill(every)


def _decode_sizes(inst, budget, load, shared) -> set[int]:
    """GPUs of every configuration with a decode knob tuple (what fixes the transfer classes)."""
    from optimizer.costs.serving.disagg import decode_knobs
    sizes = set()
    for g in replica_sizes(inst.hardware.gpus_per_node, budget):
        for deg in service_degrees(inst, g):
            mem = replica_memory(inst, deg, even_stages(inst.model.num_layers, deg.pp), load)
            if decode_knobs(mem, deg.pp, inst.search.max_micro_batches):
                sizes.add(g)
    return sizes
