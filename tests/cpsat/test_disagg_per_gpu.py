"""Dinkelbach's goodput per GPU on the disaggregated model (``cpsat.disagg_front``) equals
brute force over every (prefill candidate, decode candidate, replica counts) on random
synthetic candidates: the same highest ratio (exact fractions), proven, then the fewest GPUs
at that ratio."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from optimizer.cpsat.disagg_front import best_goodput_per_gpu
from optimizer.cpsat.disagg_model import DisaggModel
from tests.cpsat.test_disagg_model import _pairs, _random_candidates


@pytest.mark.parametrize("seed", range(30))
def test_best_goodput_per_gpu_equals_brute_force(seed):
    rnd = random.Random(500 + seed)
    gpn = rnd.choice([4, 8])
    budget = rnd.choice([6, 8, 12, 16])
    rate = rnd.choice([None, rnd.uniform(0.5, 10.0)])
    prefill, decode = _random_candidates(rnd, budget, gpn, rate)
    if not prefill:
        pytest.skip("no prefill class drawn")
    pairs = [(Fraction(g, n), n) for (g, _, n), _ in _pairs(prefill, decode, budget, gpn, True)]
    model = DisaggModel(prefill, decode, budget, gpn)
    choice = best_goodput_per_gpu(model, 20.0)
    if not pairs:
        assert choice is None and model.last_status == "infeasible"
        return
    best = max(ratio for ratio, _ in pairs)
    fewest = min(n for ratio, n in pairs if ratio == best)
    assert choice.proven and choice.gap == 0.0
    assert Fraction(choice.goodput_score, choice.gpus) == best and choice.gpus == fewest
    p, d = prefill[choice.prefill], decode[choice.decode]  # the reported choice has those scores
    assert min(choice.prefill_replicas * p.goodput_score, choice.decode_replicas * d.goodput_score) == choice.goodput_score
    assert choice.prefill_replicas * p.gpus + choice.decode_replicas * d.gpus == choice.gpus
