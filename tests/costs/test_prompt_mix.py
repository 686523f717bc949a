"""The mean prompt step over the law of its prompts (``serving.prompt_mix``) against a
brute-force Monte Carlo of the same law computed here, with a step time that is not linear
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


def brute_force_ns(tokens: int, decodes: int, draws: int = 40_000) -> float:
    """step(0, k) + x E[T - T(0)] / E[X] by Monte Carlo: a zero-truncated Poisson count of
    mean x / s (its parameter solved here by bisection), lengths drawn from the points."""
    mean = tokens / LOAD.prompt_tokens
    low, high = 1e-9, mean
    for _ in range(100):  # a / (1 - e^-a) = mean, increasing in a
        mid = (low + high) / 2
        low, high = (mid, high) if mid / -math.expm1(-mid) < mean else (low, mid)
    rng = np.random.default_rng(7)
    counts = rng.poisson(low, 4 * draws)
    counts = counts[counts > 0][:draws]
    idle = step_ns([], decodes)
    room = KNOBS.prefill_chunk_tokens - decodes
    added = held = 0.0
    for n in counts:
        chunks = chunks_of(rng.choice(POINTS, n), room)
        added += step_ns(chunks, decodes) - idle
        held += sum(c for _, c in chunks)
    return idle + tokens * added / held


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
    # u(m, k) is linear in k between the levels 128 and 256; step(0, k) is exact
    tokens = 7000
    at = {k: mixed_prompt_step_ns(REP, KNOBS, LOAD, tokens, float(k)) for k in (128, 256)}
    u = {k: (at[k] - step_ns([], k)) / tokens for k in at}
    mid = mixed_prompt_step_ns(REP, KNOBS, LOAD, tokens, 192.0)
    assert mid == pytest.approx(step_ns([], 192) + tokens * (u[128] + u[256]) / 2, rel=1e-9)
