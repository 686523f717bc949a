"""The joined replica's state on a gated prompt's arrival (``serving.arrival_state``): the
tokens of its step by hand, the TTFT quantile over the states against Monte Carlo, and the
k > 1 TTFT of ``metrics.predict`` against the states worked by hand."""

import math

import numpy as np
import pytest

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving.arrival_state import ArrivalState, step_tokens_by_state, ttft_quantile_s
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import Replica, ServiceLoad, predict
from optimizer.costs.serving.steady_state import steady_state


def test_step_tokens_by_state_by_hand():
    # s = 400, lambda = 5/s per queue, P_join = 0.2, rho = 0.4: a replica in its prompt step
    # receives 5 x 0.2 / 0.4 = 2.5 prompts/s; over E[T^2] / E[T] = 0.3 s: 0.75 more, so
    # 400 x ceil(8 x 1.75) / 8 = 700 tokens; in a decode step 5 x 0.8 / 0.6 = 6.667/s over
    # 0.03 s: 0.2 more, 400 x ceil(8 x 1.2) / 8 = 400 x 10 / 8 = 500; idle: 400
    assert step_tokens_by_state(400, 2000, 5.0, 0.2, 0.4, 0.3, 0.03) == (700, 500, 400)
    # at most the room
    assert step_tokens_by_state(400, 600, 5.0, 0.2, 0.4, 0.3, 0.03) == (600, 500, 400)
    # one queue (P_join = rho): both at lambda, 5 x 0.3 = 1.5 more -> 400 x 20 / 8 = 1000
    assert step_tokens_by_state(400, 2000, 5.0, 0.4, 0.4, 0.3, 0.03)[0] == 1000


def test_ttft_quantile_over_states_against_monte_carlo():
    # three states: a prompt step under way (P 0.3, steps of 0.1 or 0.3 s equally likely, the
    # rest length-biased: pick the step with probability T / E[T], the rest uniform over it),
    # a decode step (P 0.5, rest uniform over 0.02 s), idle (P 0.2, no wait); the own steps
    # differ by state (two equally likely prompts each)
    steps, mean_step = np.array([0.1, 0.3]), 0.2
    def prompt_tail(u):
        return np.clip(steps[None, :] - np.asarray(u)[..., None], 0.0, None) @ np.array([0.5, 0.5]) / mean_step
    def decode_tail(u):
        return np.clip(1.0 - np.asarray(u) / 0.02, 0.0, None)
    def no_wait(u):
        return np.zeros(np.shape(u))
    half = np.array([0.5, 0.5])
    states = [ArrivalState(0.3, np.array([0.25, 0.4]), half, prompt_tail, 0.3),
              ArrivalState(0.5, np.array([0.15, 0.3]), half, decode_tail, 0.02),
              ArrivalState(0.2, np.array([0.1, 0.2]), half, no_wait, 0.0)]
    rng = np.random.default_rng(3)
    draws = 400_000
    state = rng.choice(3, size=draws, p=[0.3, 0.5, 0.2])
    which = rng.integers(0, 2, size=draws)
    own = np.choose(state, [np.array([0.25, 0.4])[which], np.array([0.15, 0.3])[which], np.array([0.1, 0.2])[which]])
    long_step = rng.random(draws) < 0.3 * 0.5 / (0.3 * 0.5 + 0.1 * 0.5)  # length-biased: 0.75
    wait = np.where(state == 0, np.where(long_step, 0.3, 0.1) * rng.random(draws),
                    np.where(state == 1, 0.02 * rng.random(draws), 0.0))
    for quantile in (0.5, 0.9, 0.99):
        assert ttft_quantile_s(states, quantile) == pytest.approx(np.quantile(own + wait, quantile), rel=0.01)


def per_token(knobs, c, n, ctx):
    """10 ms per step plus 10 us per token of it, prompt or decode."""
    return 10_000_000 + 10_000 * (c + n)


def test_several_queues_gated_mean_ttft_by_hand():
    # 4 queues, fixed 100-token prompts (gated: 2 x 100 <= C - n_a), 40 req/s, step(c, k) =
    # 10 ms + 10 us (c + k). From the steady state's n_a, rho, TPOT and prompt step S:
    # P_join = min(rho, delta h(S)), delta = n_a / (49 TPOT), nu = 40/s, h(x) = x - (1 - e^{-nu x}) / nu;
    # the prompt steps' law: m >= 1 prompts (zero-truncated Poisson of mean lambda_p t,
    # lambda_p = 10 P_join / rho per s, t = rho S + (1 - rho) idle), T = step(100 m, n_a);
    # mean wait = P_join E[T^2] / (2 E[T]) + (1 - P_join) P(busy) idle / 2;
    # own step by state: x tokens (100 (1 + lambda_p E[T^2] / E[T]), 100 (1 + lambda_d idle),
    # 100, rounded up to eighths of a prompt), step(x, n_a)
    rep = Replica(per_token, queues=4, gpus=8)
    knobs = ServingKnobs(64, 1000, 1, 1)
    load = ServiceLoad(100, 50)
    rate, per_queue = 40.0, 10.0
    st = steady_state(rep, knobs, load, per_queue)
    n_a, rho = st.joined, st.rho
    def step_s(tokens):
        return (10 + 0.01 * (tokens + n_a)) / 1e3
    full_s, idle_s = st.full_ns * 1e-9, step_s(0)
    delta = n_a / (49 * st.tpot_s)
    p_join = min(rho, delta * (full_s - (1 - math.exp(-rate * full_s)) / rate))
    lam_p, lam_d = per_queue * p_join / rho, per_queue * (1 - p_join) / (1 - rho)
    mean_m = lam_p * (rho * full_s + (1 - rho) * idle_s)
    counts = np.arange(1, 60)
    probs = np.array([math.exp(-mean_m) * mean_m**c / math.factorial(c) for c in counts])
    probs /= probs.sum()
    steps = np.array([step_s(min(100 * c, 1000 - n_a)) for c in counts])
    mean_t, biased_t = float(steps @ probs), float(steps**2 @ probs) / float(steps @ probs)
    busy = q.jsq_outstanding(st.running + st.prompts, 4)[1]
    decode_share = (1 - p_join) * busy
    wait = p_join * biased_t / 2 + decode_share * idle_s / 2
    def x(more):
        return math.ceil(100 * math.ceil(8 * (1 + more) - 1e-9) / 8)
    own = (p_join * step_s(x(lam_p * biased_t)) + decode_share * step_s(x(lam_d * idle_s))
           + (1 - p_join - decode_share) * step_s(100))
    assert 0.0 < p_join < rho < 1.0 and mean_t > idle_s
    # (1e-5: the model's Poisson law by FFT on a grid, cut at 1e-9)
    assert predict(rep, knobs, load, rate).ttft_mean_s == pytest.approx(wait + own, rel=1e-5)


@pytest.mark.parametrize("queues", [1, 4])
def test_ttft_at_rate_zero_is_the_prompt_alone(queues):
    # no arrivals: the replica is idle and the prompt's step holds it alone. 100 tokens: one
    # step of 10 + 0.01 x 100 = 11 ms; 3,000 tokens over C = 1,000: three full steps of
    # 10 + 0.01 x 1,000 = 20 ms, 60 ms (the prefill-only load of the disaggregated pool, one
    # output token, and a decoding one alike)
    rep = Replica(per_token, queues=queues, gpus=8)
    knobs = ServingKnobs(64, 1000, 1, 1)
    for load, ttft_s in ((ServiceLoad(100, 1), 0.011), (ServiceLoad(100, 50), 0.011), (ServiceLoad(3000, 1), 0.060)):
        m = predict(rep, knobs, load, 0.0)
        for value in (m.ttft_mean_s, m.ttft_p50_s, m.ttft_p90_s, m.ttft_p99_s):
            assert value == pytest.approx(ttft_s, rel=1e-9)
