"""The TPOT percentile's pieces on k > 1 queues: the joins by a tie at the count
(``queueing.jsq_joins_during``), the prompt queued behind a request's own long prefill
(``routing.queued_behind_excess``), the prompt-step events sized by the time the prompts add
(``tpot._steps_per_event``) and the request's own context (``tpot._own_context_spread_ns``),
checked by hand or from the mean-field count law they are defined on."""

import math

import numpy as np
import pytest

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving import routing
from optimizer.costs.serving import tpot as T
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.service_types import Replica, ServiceLoad
from optimizer.costs.serving.steady_state import Steady


def test_one_queue_takes_every_arrival():
    # k = 1: the queue is always the least, lambda_c = lambda at every count, so the chance of
    # at least one arrival in t is 1 - e^{-lambda t} = 1 - e^{-0.3}
    assert q.jsq_joins_during(2.0, 1, 3.0, 0.1) == pytest.approx(-math.expm1(-0.3), rel=1e-9)


def test_joins_during_from_the_count_law():
    # 4 queues at a = 1.5 outstanding each (a grid point: no interpolation), lambda = 2/s,
    # t = 0.2 s; from the mean-field law P(c): G(i) = P(c >= i), P(min = i) = G(i)^4 - G(i+1)^4,
    # a queue at c takes arrivals at lambda (G(c)^4 - G(c+1)^4) / P(c)
    counts, probs = q.jsq_outstanding_count_of(1.5, 4)
    top = int(counts[-1]) + 3
    law = np.zeros(top)
    law[counts] = probs
    at_least = np.concatenate((np.cumsum(law[::-1])[::-1], [0.0]))  # G(0) .. G(top)
    least = at_least[:-1] ** 4 - at_least[1:] ** 4
    rates = np.divide(2.0 * least, law, out=np.zeros(top), where=law > 0.0)
    # the rates average to lambda over the counts (the sum telescopes to G(0)^4 = 1)
    assert float(law @ rates) == pytest.approx(2.0, rel=1e-9)
    expect = sum(least[i] * -math.expm1(-rates[i + 1] * 0.2) for i in range(top - 1))
    assert q.jsq_joins_during(1.5, 4, 2.0, 0.2) == pytest.approx(expect, rel=1e-9)
    # a longer step collects more, and nothing joins in no time
    assert q.jsq_joins_during(1.5, 4, 2.0, 0.4) > expect
    assert q.jsq_joins_during(1.5, 4, 2.0, 0.0) == 0.0


def test_queued_behind_excess_by_hand():
    # 8 queues at 0.9 prompts/s each, a 0.6 s prefill of K = 6 steps, n_a = 0.5 of n = 1.0
    # decodes, a = 1.3 outstanding, f0 = 0.02: refill delta = 0.45/s, nu = 7.2/s,
    # h(0.6) = 0.6 - (1 - e^{-4.32}) / 7.2; b = max(1 - e^{-delta h}, tie), at most
    # 1 - e^{-0.54}; e = b K (1 - f0), at most (1 - f0) L
    lives = np.array([2.0, 100.0])
    nu, delta = 7.2, 0.45
    refill = -math.expm1(-delta * (0.6 + math.expm1(-nu * 0.6) / nu))
    b = min(max(refill, q.jsq_joins_during(1.3, 8, 0.9, 0.6)), -math.expm1(-0.54))
    excess = routing.queued_behind_excess(0.9, 8, 0.6, 6.0, 0.5, 1.0, 0.02, lives, 1.3)
    assert excess[1] == pytest.approx(b * 6.0 * 0.98, rel=1e-12)
    assert excess[0] == pytest.approx(min(b * 6.0, 2.0) * 0.98, rel=1e-12)
    assert np.all(routing.queued_behind_excess(0.9, 8, 0.6, 6.0, 0.5, 0.0, 0.02, lives, 1.3) == 0.0)


def _linear(knobs, chunk, decodes, context):
    """10 ms + 10 us per prompt token + 50 us per decode + 1 ns per decode and context token."""
    return 10_000_000 + 10_000 * chunk + 50_000 * decodes + decodes * context


def _steady(joined: float, chunk_tokens: float, seen: float = 2.0) -> Steady:
    return Steady(running=3.0, joined=joined, rho=0.2, shared=0.05, seen=seen, full_ns=0.0, decode_ns=0.0,
                  with_prompt_ns=0.0, tpot_s=0.02, chunk_tokens=chunk_tokens)


def test_steps_per_event_short_prompts():
    # C = 16,384, n_a = 2: prompts of 1,000 and 3,000 tokens each take one step, adding
    # delta = 10 us x s: T = 10 and 30 ms, E[T^2] E[K] / E[T]^2 = (100 + 900) / 2 / 20^2 = 1.25
    rep, knobs = Replica(_linear, queues=4, gpus=4), ServingKnobs(64, 16384, 1, 1)
    load = ServiceLoad(2000, 50, 0.25, prompt_points=(1000, 3000))
    assert T._steps_per_event(rep, knobs, load, _steady(2.0, 2000.0)) == pytest.approx(1.25, rel=1e-12)
    # a step holding m = 4,000 / 2,000 = 2 prompts: the part above 1 halves
    assert T._steps_per_event(rep, knobs, load, _steady(2.0, 4000.0)) == pytest.approx(1.125, rel=1e-12)
    # one length: one step per event, as before
    assert T._steps_per_event(rep, knobs, ServiceLoad(2000, 50), _steady(2.0, 2000.0)) == 1.0


def test_steps_per_event_long_prompts():
    # C = 1,024, n_a = 0: prompts of 2,048 and 6,144 tokens take K = 2 and 6 full steps of the
    # same delta, so p = E[K^2] / E[K] = (4 + 36) / 2 / 4 = 5
    rep, knobs = Replica(_linear, queues=4, gpus=4), ServingKnobs(64, 1024, 1, 1)
    load = ServiceLoad(4096, 50, 0.25, prompt_points=(2048, 6144))
    assert T._steps_per_event(rep, knobs, load, _steady(0.0, 1024.0)) == pytest.approx(5.0, rel=1e-12)


def test_own_context_spread_by_hand():
    # 1 ns per decode and context token: with n' = 2 decodes a prompt 1,000 tokens longer
    # than the mean s = 2,000 moves the mean context by 500 and the step by 2 x 500 ns = 1 us;
    # the lengths 1,000 and 3,000 add -1 and +1 us. They are the law's quantiles at levels 1/4
    # and 3/4, read at 8 levels (j + 1/2) / 8 linear in the level (``service_types.between_points``,
    # the segment carried on beyond the end levels): positions (j + 1/2) / 4 - 1/2 = -3/8, -1/8,
    # ..., 11/8 on the points' index, adds -1 + 2 x position: -1.75, -1.25, ..., 1.25, 1.75 us,
    # mean 0; the 90th percentile is the 8th of 8 (8 >= 0.9 x 8 = 7.2): 1.75 us above the mean
    rep, knobs = Replica(_linear, queues=4, gpus=4), ServingKnobs(64, 16384, 1, 1)
    load = ServiceLoad(2000, 50, 0.25, prompt_points=(1000, 3000))
    assert T._own_context_spread_ns(rep, knobs, load, 2.0, 90) == pytest.approx(1750.0, rel=1e-12)
    # four lengths 500, 1,500, 2,500, 3,500 (mean 2,000) add -1.5 + position us at 16 levels,
    # positions (j + 1/2) / 4 - 1/2, mean 0; the 90th percentile is the 15th of 16 (15 >= 14.4),
    # position 14.5 / 4 - 1/2 = 3.125: 1.625 us; the 70th the 12th (12 >= 11.2), position
    # 2.375: 0.875 us (the 4 points as atoms give 1.5 and 0.5 us)
    load4 = ServiceLoad(2000, 50, 0.25, prompt_points=(500, 1500, 2500, 3500))
    assert T._own_context_spread_ns(rep, knobs, load4, 2.0, 90) == pytest.approx(1625.0, rel=1e-12)
    assert T._own_context_spread_ns(rep, knobs, load4, 2.0, 70) == pytest.approx(875.0, rel=1e-12)
    assert T._own_context_spread_ns(rep, knobs, ServiceLoad(2000, 50), 2.0, 90) == 0.0
