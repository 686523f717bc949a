"""The serving model's least-loaded routing over outstanding requests (k > 1):
``routing.routed`` and ``routing.routed_excess``, checked by hand from the queueing
functions they combine (those are tested against their own definitions in
test_serving_queueing.py)."""

import math

import numpy as np
import pytest

from optimizer.costs.serving import metrics as M
from optimizer.costs.serving import queueing as q
from optimizer.costs.serving import routing
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.steady_state import steady_state


def test_routed_counts_by_hand():
    # 8 queues, n = 1.0 decodes, 0.4 prompts prefilling, 0.25 waiting per queue: a = 1.65
    least, _, seen, busy = q.jsq_outstanding(1.65, 8, 0.65 / 1.65)
    joined, seen_decodes, busy_decodes = routing.routed(1.0, 0.4, 0.25, 8)
    # n_a = E[min] n / (n + lambda W) = E[min] / 1.25, below n = 1
    assert joined == pytest.approx(min(1.0, least / 1.25), rel=1e-12)
    # n' = 1 + (c' - 1) n / a: the others decode in proportion 1 / 1.65
    assert seen_decodes == pytest.approx(1.0 + (seen - 1.0) / 1.65, rel=1e-12)
    assert busy_decodes == pytest.approx(busy, rel=1e-12)
    # no prompts and no wait: the least-loaded queue's count, capped at n
    assert routing.routed(3.0, 0.0, 0.0, 4)[0] == pytest.approx(min(3.0, q.jsq_outstanding(3.0, 4)[0]), rel=1e-12)


def test_routed_excess_by_hand():
    # 8 queues at 0.9 prompts/s each, a 0.47 s prompt step, n_a = 0.78 of n = 1.18 decodes,
    # stationary share f0 = 0.0157: delta = n_a lambda / n = 0.59492/s, nu = 7.2/s,
    # h(0.47) = 0.47 - (1 - e^{-3.384}) / 7.2 = 0.47 - 0.96608 / 7.2 = 0.33582, delta h = 0.19978,
    # b = 1 - e^{-0.19978} = 0.18109 (below 1 - e^{-0.9 x 0.47} = 0.3449),
    # a = f0 (1 - b) / (1 - f0) = 0.013062; e(1) = b - pi with pi = f0
    lives = np.array([1.0, 2.0, 1000.0])
    excess = routing.routed_excess(0.9, 8, 0.47, 0.78, 1.18, 0.0157, lives)
    delta, nu = 0.78 * 0.9 / 1.18, 7.2
    b = -math.expm1(-delta * (0.47 + math.expm1(-nu * 0.47) / nu))
    assert b == pytest.approx(0.18109, abs=2e-5)
    a = 0.0157 * (1 - b) / (1 - 0.0157)
    r = b - a
    assert excess[0] == pytest.approx(b - 0.0157, rel=1e-9)
    assert excess[1] == pytest.approx((b - 0.0157) * (1 + r), rel=1e-9)
    assert excess[2] == pytest.approx((b - 0.0157) / (1 - r), rel=1e-9)
    # a queue stream so slow that b would pass the one-queue chain's 1 - e^{-lambda p}: capped
    capped = routing.routed_excess(0.9, 8, 0.47, 50.0, 1.18, 0.0157, lives)
    b_cap = -math.expm1(-0.9 * 0.47)
    assert capped[0] == pytest.approx(b_cap - 0.0157, rel=1e-9)


def test_one_queue_is_not_routed():
    # one queue keeps n_a = n and no outstanding-prompt bookkeeping (the k > 1 model only)
    rep = M.Replica(lambda knobs, chunk, decodes, ctx: 1_000_000 + 1000 * chunk + 50_000 * decodes, 1, 1)
    st = steady_state(rep, ServingKnobs(64, 1000, 1, 1), M.ServiceLoad(2000, 100), 2.0)
    assert st.joined == pytest.approx(st.running, rel=1e-8) and st.prompts == 0.0  # (last iterate's n)


def test_total_count_gain_by_hand():
    # lives of E[L] = 50 steps in (D - 1) TPOT = 1.0 s; a prompt of K = 0.5 steps, each
    # Delta = 0.04 s longer, held up n_a = 2 decodes: 2 x 0.04 x 0.5 = 0.04 s of decode time;
    # its decode adds b = 0.002 s to each of 50 steps of n' - 1 = 3 others: 3 x 0.002 x 50
    # = 0.3 s; G = (0.04 + 0.3) / 1.0 = 0.34
    assert routing.total_count_gain(1.0, 0.04, 0.5, 2.0, 0.002, 3.0, 50.0) == pytest.approx(0.34, rel=1e-12)
    # a request alone on its queue holds up nobody (10b_moe_service at 30 %: n' = 1.00)
    assert routing.total_count_gain(1.0, 0.04, 0.5, 0.0, 0.002, 0.0, 50.0) == 0.0
    # capped at 0.9 (the loop would run away), never below 0 (a pipeline's step may fall with its count)
    assert routing.total_count_gain(1.0, 0.4, 5.0, 2.0, 0.002, 3.0, 50.0) == 0.9
    assert routing.total_count_gain(1.0, 0.0, 0.5, 2.0, -0.002, 3.0, 50.0) == 0.0


def test_total_count_gain_is_the_one_queue_gain_on_one_queue():
    # on one queue n_a = n' - 1 = n and n / ((D - 1) TPOT) = lambda: the gain of
    # decode_life.running_count_dispersion (there returned as G / (1 - G))
    from optimizer.costs.serving.decode_life import running_count_dispersion
    n, life_s, delta_s, b_s, ks, lives = 6.0, 1.5, 0.03, 0.001, np.array([0.8]), np.array([40.0])
    gain = routing.total_count_gain(life_s, delta_s, 0.8, n, b_s, n, 40.0)
    assert gain / (1.0 - gain) == pytest.approx(running_count_dispersion(lives, n / life_s, delta_s, b_s, ks), rel=1e-12)


def test_life_variance_share_by_brute_force():
    # Poisson part 2/3; the loop's part G / (1 - G) times the mean of e^{-x |u - v|} over
    # u, v uniform on (0, 1), x = 1 - G, here by a midpoint grid
    grid = (np.arange(2000) + 0.5) / 2000
    for gain in (0.2, 0.5, 0.8):
        x = 1.0 - gain
        kept = np.exp(-x * np.abs(grid[:, None] - grid[None, :])).mean()
        assert routing.life_variance_share(gain) == pytest.approx(2 / 3 + gain / x * kept, rel=1e-5)
    # G = 0.5: x = 0.5, 2 (0.5 - 1 + e^-0.5) / 0.25 = 0.85225, so 2/3 + 1 x 0.85225 = 1.51892
    assert routing.life_variance_share(0.5) == pytest.approx(1.51892, abs=1e-5)
    assert routing.life_variance_share(0.0) == pytest.approx(2 / 3)


def test_total_seen_excess_is_the_total_variance_by_enumeration():
    # A request's queue holds E[c^2] / E[c] (size bias). Two exchangeable queues whose total T
    # is over-dispersed (negative binomial, mean 6, variance v * 6 with v = 2.5) and split
    # between them at random (c | T ~ Binomial(T, 1/2): a deviation d = c - T / 2 of variance
    # E[T] / 4, uncorrelated with T). Enumerated exactly, E[c^2] / E[c] is the deviation's
    # size bias a + Var(d) / a plus v / k, k = 2, the part ``total_seen_excess`` adds.
    mean, v, k = 6.0, 2.5, 2
    r = mean / (v - 1.0)  # negative binomial: variance mean (1 + mean / r) = v mean
    success = r / (r + mean)
    def p_total(t):
        return math.exp(math.lgamma(t + r) - math.lgamma(r) - math.lgamma(t + 1)
                        + r * math.log(success) + t * math.log(1.0 - success))
    totals = range(300)
    assert sum(p_total(t) for t in totals) == pytest.approx(1.0, abs=1e-12)
    first, second = 0.0, 0.0
    for t in totals:
        c = np.arange(t + 1)
        pc = np.array([math.comb(t, i) for i in range(t + 1)], dtype=float) * 0.5**t
        first += p_total(t) * float(pc @ c)
        second += p_total(t) * float(pc @ c**2)
    a = mean / k
    deviation_variance = mean / 4.0  # E[Var(c | T)] = E[T] / 4
    assert first == pytest.approx(a, rel=1e-9)
    assert second / first == pytest.approx(a + deviation_variance / a + routing.total_seen_excess(v, k), rel=1e-9)


def test_routed_with_total_dispersion_by_hand():
    # 4 queues, n = 2.0 decodes, 0.3 prefilling, 0.2 waiting: a = 2.5; a total of variance
    # 1.8 k a raises the request's queue by v / k = 0.45 outstanding, of which n / a = 0.8
    # decode: n' rises by 0.36; n_a and busy do not move
    plain = routing.routed(2.0, 0.3, 0.2, 4)
    spread = routing.routed(2.0, 0.3, 0.2, 4, total_dispersion=1.8)
    assert spread[1] - plain[1] == pytest.approx(0.45 * 0.8, rel=1e-12)
    assert spread[0] == plain[0] and spread[2] == plain[2]
    # routed_at passes it on: at z = 0 the mean's
    assert routing.routed_at(2.0, 0.3, 0.2, 4, 0.0, 2 / 3, 1.8) == spread
