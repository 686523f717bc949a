"""The mean prompt step over the law of its prompts (``serving.prompt_mix``) against a
brute-force Monte Carlo of the same law computed here (lengths drawn, not stratified), with a step time that is not linear
in the step's make-up (a kink where the prompts' compute passes the decodes' memory floor,
and a cost per attended key that falls with the step's mean attended context)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.prompt_mix import count_law, mixed_prompt_step_ns
from optimizer.costs.serving.service_types import Replica, ServiceLoad

KNOBS = ServingKnobs(256, 16384, 1, 1)
POINTS = tuple(int(v) for v in np.round(np.exp(np.linspace(5.5, 9.4, 32))))  # 245 .. 12,088 tokens
LOAD = ServiceLoad(round(float(np.mean(POINTS))), 100, prompt_points=POINTS)


def chunks_of(lengths, room: int) -> list[tuple[int, int]]:
    """(start, tokens) of whole prompts in order until the room is full; the one that does
    not fit: a chunk of the room at the mean start (l - room) / 2 of its chunks."""
    out = []
    for length in lengths:
        if room <= 0:
            break
        out.append((0, length) if length <= room else ((length - room) // 2, room))
        room -= length
    return out


def step_ns(chunks, decodes: int) -> int:
    """A step: 20 us a token plus the larger of the prompts' attention (keys at a cost that
    halves from a mean attended context of 0 to one of 4,000) and the decodes' memory
    floor (0.3 ms a decode), plus 5 ms."""
    tokens = sum(n for _, n in chunks)
    keys = sum(start * n + n * (n + 1) / 2 for start, n in chunks)
    context = keys / tokens if tokens else 0.0
    attention = keys * 2.0 / (1.0 + min(context, 4000.0) / 4000.0)
    return round(5e6 + 2e4 * (tokens + decodes) + max(attention, 3e5 * decodes))


REP = Replica(lambda knobs, chunk, decodes, ctx: step_ns([(0, chunk)] if chunk else [], decodes), 1, 1,
              prompts_step_ns=lambda knobs, lengths, decodes, ctx: step_ns(
                  chunks_of(lengths, knobs.prefill_chunk_tokens - decodes), decodes))


def brute_force_ns(tokens: int, decodes: int, draws: int = 20_000) -> float:
    """The mean step over the law whose mean prompt tokens are ``tokens``, by Monte Carlo:
    a zero-truncated Poisson count (drawn by its inverse distribution function from fixed
    uniforms, so that the tokens held grow with its parameter), lengths drawn from the
    points, the prompts whole until the room is full; the parameter found by bisection so
    that the mean tokens held are ``tokens``."""
    rng = np.random.default_rng(7)
    uniforms = rng.random(draws)
    slots = rng.choice(POINTS, (draws, 200))
    room = KNOBS.prefill_chunk_tokens - decodes
    sums = np.cumsum(slots, axis=1)

    def counts(a: float) -> np.ndarray:
        n = np.arange(1, 200)
        pmf = np.exp(n * math.log(a) - a - np.array([math.lgamma(k + 1) for k in n])) / -math.expm1(-a)
        return np.minimum(np.searchsorted(np.cumsum(pmf), uniforms) + 1, 199)

    def held(a: float) -> float:
        return float(np.minimum(room, sums[np.arange(draws), counts(a) - 1]).mean())

    low, high = 1e-6, 200.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if held(mid) < tokens else (low, mid)
    steps = [step_ns(chunks_of(slots[i, :n], room), decodes) for i, n in enumerate(counts(low))]
    return float(np.mean(steps))


def test_count_law_mean_and_one_prompt():
    # the truncated law keeps its mean: sum n P(n) = m (mass left out < 1e-4 of the mode's each)
    for mean in (1.3, 2.22, 7.5, 30.0):
        counts, probs = count_law(mean)
        assert sum(probs) == pytest.approx(1.0)
        assert sum(n * p for n, p in zip(counts, probs)) == pytest.approx(mean, rel=2e-3)
        assert min(counts) == 1 or mean > 7
    assert count_law(1.0) == ((1,), (1.0,))


@pytest.mark.parametrize("tokens, decodes", [(7000, 16), (7000, 64), (7000, 248), (3500, 128), (20000, 32)])
def test_quadrature_matches_monte_carlo(tokens, decodes):
    tokens = min(tokens, KNOBS.prefill_chunk_tokens - decodes)
    got = mixed_prompt_step_ns(REP, KNOBS, LOAD, tokens, float(decodes))
    want = brute_force_ns(tokens, decodes)
    assert got == pytest.approx(want, rel=0.02)


def test_quadrature_is_not_the_mean_make_up():
    # the law's mean step is longer than the step of the mean make-up (whole prompts of s,
    # then the rest: 3,138 + 3,138 + 724 tokens) by Jensen over the kink and the context
    # (1.079 with this step at 64 decodes; the old model's step would be the latter)
    s = LOAD.prompt_tokens
    mean_make_up = step_ns([(0, s), (0, s), (0, 7000 - 2 * s)], 64)
    assert mixed_prompt_step_ns(REP, KNOBS, LOAD, 7000, 64.0) > 1.05 * mean_make_up


def test_between_levels_linear_in_the_decodes():
    # what the prompts add is linear in k between the levels 128 and 256; step(0, k) exact
    tokens = 7000
    added = {k: mixed_prompt_step_ns(REP, KNOBS, LOAD, tokens, float(k)) - step_ns([], k) for k in (128, 256)}
    mid = mixed_prompt_step_ns(REP, KNOBS, LOAD, tokens, 192.0)
    assert mid == pytest.approx(step_ns([], 192) + (added[128] + added[256]) / 2, rel=1e-9)


def test_the_memos_live_and_die_with_the_replica():
    # the law's curves are kept in the replica (a second call costs no step), and nothing
    # of this module keeps a replica alive once its search drops it
    import gc
    import weakref
    costed = []

    def prompts_step(knobs, lengths, decodes, ctx):
        costed.append(lengths)
        return step_ns(chunks_of(lengths, knobs.prefill_chunk_tokens - decodes), decodes)
    rep = Replica(REP.step_ns, 1, 1, prompts_step_ns=prompts_step)
    first = mixed_prompt_step_ns(rep, KNOBS, LOAD, 7000, 64.0)
    assert costed and rep.memo
    calls = len(costed)
    assert mixed_prompt_step_ns(rep, KNOBS, LOAD, 7000, 64.0) == first and len(costed) == calls
    alive = weakref.ref(rep)
    del rep
    gc.collect()
    assert alive() is None
