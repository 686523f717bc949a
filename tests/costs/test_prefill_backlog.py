"""Prompt tokens left over from step to step (``serving.prefill_backlog``) against Lindley's
recursion iterated to convergence by brute force (direct convolutions of n-fold length laws,
no FFT), and the prompt tokens of a step by hand; the TTFT mixture quantile by hand."""

import math

import numpy as np
import pytest

from optimizer.costs.serving.prefill_backlog import (
    adjustment_coefficient,
    leftover_steps,
    round_robin_counts,
    step_tokens_law,
)
from optimizer.costs.serving.ttft import mixture_quantile_s

ROOM = 16_000
CELLS = 32  # grid cells per room of the brute force


def _points(quantile, count=32):
    return tuple(int(quantile((i + 0.5) / count)) for i in range(count))


EXPONENTIAL = _points(lambda u: -6600 * math.log(1 - u))
LOGNORMAL = _points(lambda u: 3000 * math.exp(__import__("statistics").NormalDist().inv_cdf(u)))


def _round_robin(arrivals, queues, n):
    """P(a replica takes n of the deployment's Poisson(queues arrivals) prompts when it takes
    every queues-th, random phase), by enumeration of the deployment's count j and phase u."""
    total = queues * arrivals
    return sum(math.exp(-total) * total**j / math.factorial(j) / queues
               for j in range(max(0, n * queues - queues), n * queues + queues + 1)
               for u in range(queues) if (j + u) // queues == n)


def _brute_force(points, arrivals, rooms=60, queues=1):
    """(P(L > 0), E[L] in rooms) of L' = max(L + A - R, 0) iterated from L = 0, A the tokens
    of Poisson(arrivals) prompts of the equally likely points (the round robin's count on
    ``queues`` > 1): A's law as the count's mix of n-fold convolutions of one length's law
    (np.convolve), L's by direct convolution."""
    one = np.zeros(int(max(points) * CELLS / ROOM) + 2)
    for p in points:
        one[round(p * CELLS / ROOM)] += 1 / len(points)
    a, fold, n = np.zeros(rooms * CELLS), np.array([1.0]), 0
    while n < 200:
        weight = math.exp(-arrivals) * arrivals**n / math.factorial(n) if queues == 1 else \
            _round_robin(arrivals, queues, n)
        a[:min(len(fold), len(a))] += weight * fold[:len(a)]
        if n > arrivals and weight < 1e-13:
            break
        fold, n = np.convolve(fold, one), n + 1
    law = np.zeros(rooms * CELLS)
    law[0] = 1.0
    for _ in range(5000):
        total = np.convolve(law, a)
        nxt = np.zeros_like(law)
        nxt[0] = total[:CELLS + 1].sum()
        nxt[1:] = total[CELLS + 1:CELLS + len(law)]
        nxt[-1] += total[CELLS + len(law):].sum()
        done = np.abs(nxt - law).sum() < 1e-9
        law = nxt
        if done:
            break
    return 1 - law[0], float(law @ (np.arange(len(law)) / CELLS))


@pytest.mark.parametrize("points, load", [(EXPONENTIAL, 0.5), (EXPONENTIAL, 0.85), (LOGNORMAL, 0.7)])
def test_leftover_against_the_recursion(points, load):
    # arrivals per full step such that E[A] = load R
    arrivals = load * ROOM / np.mean(points)
    busy_ref, mean_ref = _brute_force(points, arrivals)
    steps, probs = leftover_steps(points, arrivals, ROOM)
    assert probs.sum() == pytest.approx(1.0)
    assert 1 - probs[0] == pytest.approx(busy_ref, abs=0.03)
    assert 0.7 * mean_ref <= float(steps @ probs) <= 1.05 * mean_ref  # the documented accuracy


def _brute_force_entry(points, arrivals, entry, rooms=60):
    """P(an arrival sees L > 0) of the recursion whose steps are full (Poisson(arrivals)
    prompts) while L > 0 and else one of the entry steps (Poisson(entry[0][j]) with
    probability entry[1][j]), by direct convolutions; each step weighted by its duration
    (proportional to its mean arrivals)."""
    cells = rooms * CELLS
    def law(mean):
        one = np.zeros(int(max(points) * CELLS / ROOM) + 2)
        for p in points:
            one[round(p * CELLS / ROOM)] += 1 / len(points)
        a, fold, n = np.zeros(cells), np.array([1.0]), 0
        while n < 300:
            weight = math.exp(-mean) * mean**n / math.factorial(n)
            a[:min(len(fold), cells)] += weight * fold[:cells]
            if n > mean and weight < 1e-13:
                break
            fold, n = np.convolve(fold, one), n + 1
        return a
    full = law(arrivals)
    start = sum(p * law(x) for x, p in zip(*entry))
    entry_mean = float(np.dot(*entry))
    state = np.zeros(cells)
    state[0] = 1.0
    for _ in range(5000):
        from_full = np.convolve(state[1:], full)  # L > 0 (cell i + 1 at index i)
        nxt = np.zeros(cells)
        nxt[0] = state[0] * start[:CELLS + 1].sum() + from_full[:CELLS].sum()
        nxt[1:cells - CELLS] += state[0] * start[CELLS + 1:cells]
        nxt[1:] += from_full[CELLS:CELLS + cells - 1]
        done = np.abs(nxt - state).sum() < 1e-10
        state = nxt
        if done:
            break
    over_full = float(np.convolve(state[1:], full)[CELLS:].sum())
    over_entry = state[0] * float(start[CELLS + 1:].sum())
    return (arrivals * over_full + entry_mean * over_entry) / (arrivals * (1 - state[0]) + entry_mean * state[0])


@pytest.mark.parametrize("points, load, queues", [(EXPONENTIAL, 0.7, 2), (EXPONENTIAL, 0.85, 8), (LOGNORMAL, 0.8, 4)])
def test_leftover_of_a_round_robin_against_the_recursion(points, load, queues):
    # a replica of `queues` taking every queues-th prompt: fewer steps overflow than with
    # Poisson counts at the same mean
    arrivals = load * ROOM / np.mean(points)
    busy_ref, mean_ref = _brute_force(points, arrivals, queues=queues)
    steps, probs = leftover_steps(points, arrivals, ROOM, queues=queues)
    assert probs.sum() == pytest.approx(1.0)
    assert 1 - probs[0] == pytest.approx(busy_ref, abs=0.03)
    assert 0.7 * mean_ref <= float(steps @ probs) <= 1.05 * mean_ref  # the documented accuracy
    assert 1 - probs[0] < 1 - leftover_steps(points, arrivals, ROOM)[1][0]


def test_round_robin_counts_by_hand():
    # a replica of 2 at 0.5 prompts per step: the deployment's J ~ Poisson(1), P(J = j) =
    # e^-1 / j! = 0.367879 (j = 0, 1), 0.183940 (2), 0.061313 (3); n = floor((J + U) / 2),
    # U = 0 or 1: P(n = 0) = P(0) + P(1) / 2 = 0.551819, P(n = 1) = P(1) / 2 + P(2) + P(3) / 2
    # = 0.398536; the mean is 0.5 (sum over u of floor((j + u) / 2) = j)
    counts = round_robin_counts(0.5, 2)
    assert counts[0] == pytest.approx(0.551819, abs=1e-6)
    assert counts[1] == pytest.approx(0.398536, abs=1e-6)
    assert counts.sum() == pytest.approx(1.0, abs=1e-12)
    assert counts @ np.arange(len(counts)) == pytest.approx(0.5, abs=1e-12)
    poisson = round_robin_counts(0.5, 1)  # one queue: Poisson(0.5)
    assert poisson[:3] == pytest.approx([math.exp(-0.5), 0.5 * math.exp(-0.5), 0.125 * math.exp(-0.5)], rel=1e-12)


@pytest.mark.parametrize("points, load, scale", [(EXPONENTIAL, 0.5, 0.6), (EXPONENTIAL, 0.85, 0.7),
                                                 (LOGNORMAL, 0.7, 0.5), (LOGNORMAL, 0.8, 0.8)])
def test_leftover_entered_from_shorter_steps_against_the_recursion(points, load, scale):
    # full steps carry E[A] = load R; the steps a backlog starts from carry 0.5, 1 and 1.5
    # times scale of that, with probabilities 0.3, 0.4, 0.3
    arrivals = load * ROOM / np.mean(points)
    entry = (np.array([0.5, 1.0, 1.5]) * scale * arrivals, np.array([0.3, 0.4, 0.3]))
    seen = _brute_force_entry(points, arrivals, entry)
    steps, probs = leftover_steps(points, arrivals, ROOM, entry)
    assert probs.sum() == pytest.approx(1.0)
    assert 1 - probs[0] == pytest.approx(seen, abs=0.06)  # the documented accuracy
    plain_steps, plain_probs = leftover_steps(points, arrivals, ROOM)
    assert 1 - probs[0] < 1 - plain_probs[0]  # shorter steps start fewer backlogs


def test_leftover_entered_from_full_steps_is_the_plain_recursion():
    entry = (np.array([2.0]), np.array([1.0]))
    for got, plain in zip(leftover_steps(LOGNORMAL, 2.0, ROOM, entry), leftover_steps(LOGNORMAL, 2.0, ROOM)):
        assert got == pytest.approx(plain, rel=1e-12)


def test_no_leftover_when_no_step_can_overflow():
    # fixed 1,000-token prompts, 0.1 per step: passing 16,000 tokens needs 17 prompts in one
    # step, P = e^-0.1 0.1^17 / 17! ~ 3e-32
    steps, probs = leftover_steps((1000,) * 4, 0.1, ROOM)
    assert steps.tolist() == [0.0] and probs.tolist() == [1.0]


def test_adjustment_coefficient_is_the_positive_root():
    # a = s / R = 0.25, 2 prompts per step (E[A] = R / 2): lambda (e^{theta a} - 1) = theta
    rooms, arrivals = np.full(4, 0.25), 2.0
    theta = adjustment_coefficient(rooms, arrivals)
    def f(x):
        return arrivals * (math.exp(x * 0.25) - 1) - x
    assert f(theta) == pytest.approx(0.0, abs=1e-9)
    assert theta > 0 and f(theta / 2) < 0 < f(2 * theta)


def test_step_tokens_of_fixed_prompts_by_hand():
    # 1,000-token prompts, Poisson(0.5) of them given at least one: n prompts with probability
    # e^-0.5 0.5^n / n! / (1 - e^-0.5): 0.77075 (n = 1), 0.19269 (2), 0.03211 (3)
    tokens, probs = step_tokens_law((1000,), 0.5, ROOM)
    norm = 1 - math.exp(-0.5)
    for n, expected in ((1, 0.77075), (2, 0.19269), (3, 0.03211)):
        assert math.exp(-0.5) * 0.5**n / math.factorial(n) / norm == pytest.approx(expected, abs=1e-5)
        assert probs[list(tokens).index(1000 * n)] == pytest.approx(expected, abs=1e-5)
    assert tokens.max() <= ROOM and probs.sum() == pytest.approx(1.0)


def test_step_tokens_are_capped_at_the_room():
    # 12,000-token prompts, 2 per step on average: two pass the room, so P(tokens = R) =
    # P(n >= 2 | n >= 1) = (1 - e^-2 - 2 e^-2) / (1 - e^-2) = 0.68696
    tokens, probs = step_tokens_law((12_000,), 2.0, ROOM)
    assert tokens.max() == ROOM
    assert probs[tokens == ROOM].sum() == pytest.approx((1 - 3 * math.exp(-2)) / (1 - math.exp(-2)), abs=1e-6)


def test_mixture_quantile_by_hand():
    # own 1 s or 2 s (equally likely), P(wait > t) = 0.5 e^-t: for t >= 2 the tail is
    # 0.25 e^-(t-1) + 0.25 e^-(t-2) = 0.25 e^-(t-2) (1 + e^-1) = 0.1 at
    # t = 2 + ln(2.5 (1 + e^-1)) = 3.22952
    owns, weights = np.array([1.0, 2.0]), np.array([0.5, 0.5])
    def tail(t):
        return 0.5 * np.exp(-t)
    wait_q = math.log(0.5 / 0.1)  # the wait's own p90
    t90 = mixture_quantile_s(owns, weights, tail, wait_q, 0.9)
    assert t90 == pytest.approx(2 + math.log(2.5 * (1 + math.exp(-1))), rel=1e-5)
    # one point: the own time plus the wait's quantile
    assert mixture_quantile_s(np.array([1.0]), np.array([1.0]), tail, wait_q, 0.9) == 1.0 + wait_q
