"""The CP-SAT service model picks what brute force over every candidate picks."""

import functools
import itertools

import pytest

from optimizer.costs.layout import Degrees
from optimizer.costs.serving.candidates import evaluate_candidate
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import Replica, ServiceLoad, Slo
from optimizer.cpsat.service_model import ServiceModel

MS = 1_000_000


def _replica(pp, weight_ms, per_token_us, per_decode_us):
    """A step double: one micro-batch pass costs weights + per-token + per-decode terms,
    and a step of m micro-batches on pp stages takes max(m, pp) / pp passes of 1/m of it."""
    def step_ns(knobs, c, n, ctx):
        m = max(knobs.prefill_micro_batches, knobs.decode_micro_batches)
        one = weight_ms * MS + (per_token_us * 1000 * c + per_decode_us * 1000 * n) // m
        return max(m, pp) * one // pp
    return Replica(step_ns, queues=8 // pp, gpus=8)


@functools.cache  # the same candidates for every test of a rate (none changes them): evaluated once
def _candidates(rate):
    load, slo = ServiceLoad(2000, 200), Slo(max_ttft_s=1.0, max_tpot_ms=40.0, percentile=90)
    out = []
    for pp, (w, t, d) in [(1, (12, 20, 40)), (2, (7, 12, 30)), (4, (4, 9, 25))]:
        rep = _replica(pp, w, t, d)
        for cap, chunk, m in itertools.product((8, 16, 32, 64, 96), (512, 1024, 2048, 4096), (1, 2)):
            if m > 1 and pp == 1:
                continue
            out.append(evaluate_candidate(Degrees(1, pp, 8 // pp, 1, 1, 8 // pp, 1),
                                          ServingKnobs(cap, chunk, m, m), rep, load, slo, rate))
    return out


@pytest.mark.parametrize("primary", ["goodput", "throughput"])
@pytest.mark.parametrize("rate", [None, 20.0])
@pytest.mark.xdist_group("service_model_candidates")  # they share ``_candidates``: one process
def test_lexicographic_optimum_equals_brute_force(primary, rate):
    cands = _candidates(rate)
    other = "throughput" if primary == "goodput" else "goodput"
    allowed = [c for c in cands if c.meets_rate is not False]
    best = max((getattr(c, f"{primary}_score"), getattr(c, f"{other}_score")) for c in allowed)
    choice = ServiceModel(cands).solve(primary, time_limit_s=10)
    got = cands[choice.index]
    assert (getattr(got, f"{primary}_score"), getattr(got, f"{other}_score")) == best
    assert choice.proven and [p.name for p in choice.phases] == [primary, other]
    if rate is not None:
        assert got.meets_rate and len(allowed) < len(cands)  # the rate rules some out


def test_min_goodput_infeasible_and_tight():
    cands = _candidates(None)
    top = max(c.goodput_score for c in cands)
    assert ServiceModel(cands, min_goodput_score=top + 1).solve("throughput", 10) is None
    choice = ServiceModel(cands, min_goodput_score=top).solve("throughput", 10)
    assert cands[choice.index].goodput_score == top
