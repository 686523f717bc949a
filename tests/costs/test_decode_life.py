"""The prompt steps in a decode's life (``serving.decode_life``) against sums worked by hand."""

import math

import numpy as np
import pytest

from optimizer.costs.serving.decode_life import (
    busy_period_excess,
    chain_excess,
    one_queue_tpot_quantile_s,
    running_count_dispersion,
    share_quantile,
    shot_noise_cumulants,
    steps_per_prompt,
)


def test_excess_after_the_own_prompt_step():
    # lambda = 2/s, prompt step p = 0.5 s, decode step d = 0.05 s:
    # a = 1 - e^-0.1 = 0.0951626, b = 1 - e^-1 = 0.6321206, pi = a / (a + 1 - b) = 0.2055728,
    # r = b - a = 0.5369580; the chain's step i carries a prompt with pi + (b - pi) r^(i-1),
    # so the excess over L steps is the sum of (b - pi) r^(i-1), i = 1..L
    a, b = -math.expm1(-0.1), -math.expm1(-1.0)
    pi, r = a / (a + 1 - b), b - a
    by_sum = [sum((b - pi) * r ** (i - 1) for i in range(1, L + 1)) for L in (1, 3, 40)]
    got = chain_excess(a, b, np.array([1, 3, 40]))
    assert got == pytest.approx(by_sum, rel=1e-12)
    assert got[0] == pytest.approx(b - pi, rel=1e-12)
    # no excess when a prompt step is no likelier after a prompt step (b <= pi)
    assert chain_excess(0.5, 0.2, np.array([5])) == pytest.approx([0.0])


def test_busy_period_excess_by_hand():
    # rho = 0.5, K = 2 steps a prompt, cv^2 = 1, stationary share pi = 0.1: a mean run of
    # M = 2 / 0.5 = 4 steps; after a first token R = 4 x 0.5 x (1 + 2 x 0.5 / (2 x 0.5)) = 4
    # steps (M/G/1: those queued during its wait and prefill, each a sub-busy period);
    # e = (1 - 0.1) (4 - 0.1 x 4) = 3.24 over a long life; r = 1 - 1 / (0.9 x 4) = 0.72222:
    # L = 1: 3.24 x (1 - 0.72222) = 0.9 (= (1 - pi) L, the cap: equal here); L = 10:
    # 3.24 x (1 - 0.72222^10) = 3.24 x (1 - 0.03859) = 3.1150; L = 1000: 3.24
    r = 1 - 1 / 3.6
    got = busy_period_excess(0.5, 2.0, 1.0, 0.1, np.array([1, 10, 1000]))
    assert got == pytest.approx([0.9, 3.24 * (1 - r**10), 3.24], rel=1e-12)
    assert got[1] == pytest.approx(3.1150, abs=1e-4)
    # near saturation the run outlasts a short life: rho = 0.95, M = 40, R = 40 x 0.95 x
    # (1 + 2 x 0.95 / 0.1) = 760, e = 0.9 (760 - 4) = 680.4, over L = 2 steps
    # 680.4 (1 - (35 / 36)^2) = 37.3 > the cap (1 - pi) L = 1.8
    assert busy_period_excess(0.95, 2.0, 1.0, 0.1, np.array([2])) == pytest.approx([1.8], rel=1e-12)
    # every step at rho >= 1; none at rho = 0; none when the stationary share already holds
    # the run: pi = 0.9, rho = 0.1, K = 1: M = 1.111, R = 0.1111 x (1 + 2 x 0.1 / 1.8) = 0.1235
    # < pi M = 1.0
    assert busy_period_excess(1.0, 2.0, 1.0, 0.1, np.array([5, 50])) == pytest.approx([4.5, 45.0])
    assert busy_period_excess(0.0, 2.0, 1.0, 0.1, np.array([5])) == pytest.approx([0.0])
    assert busy_period_excess(0.1, 1.0, 1.0, 0.9, np.array([5])) == pytest.approx([0.0])


def test_busy_period_excess_is_the_chain_for_a_geometric_run():
    # with the chain's geometric run, R = b / (1 - b) and M = 1 / (1 - b), the busy-period
    # form (1 - pi) (R - pi M) equals the chain's (b - pi) / (1 - r), r = b - a: here K = 1,
    # cv^2 = -1 (an algebraic device: it zeroes the wait term) and rho = b make R = b / (1 - b)
    # and M = 1 / (1 - b); pi from a
    a, b = 0.0951626, 0.6321206
    pi = a / (a + 1 - b)
    got = busy_period_excess(b, 1.0, -1.0, pi, np.array([10_000]))
    assert got == pytest.approx(chain_excess(a, b, np.array([10_000])), rel=1e-9)


def test_share_quantile_of_one_life():
    # one life of 10 steps, 1 prompt step on average, one step per event: Poisson(1) has
    # P(0) = 0.3679, P(<= 1) = 0.7358, P(<= 2) = 0.9197, so its p90 is 2 steps: share 0.2;
    # its p50 is 1 step: 0.1
    assert share_quantile(np.array([10.0]), np.array([1.0]), 1.0, 0.9) == pytest.approx(0.2)
    assert share_quantile(np.array([10.0]), np.array([1.0]), 1.0, 0.5) == pytest.approx(0.1)
    # events of 4 steps (a prompt longer than the room takes 4): Poisson(1 / 4) events,
    # P(0) = e^-0.25 = 0.7788 < 0.9 <= P(<= 1) = 0.9735: p90 is one event, 4 steps of 10
    assert share_quantile(np.array([10.0]), np.array([1.0]), 4.0, 0.9) == pytest.approx(0.4)


def test_share_quantile_mixes_short_and_long_lives():
    # lives of 2 and 50 steps, equally likely, 0.05 prompt steps per step (0.1 and 2.5):
    # life 2: P(0) = e^-0.1 = 0.9048, then share 0.5 (1 event), 1.0 (2 events, P(<=2) 0.99985);
    # life 50: Poisson(2.5) CDF 0.0821, 0.2873, 0.5438, 0.7576, 0.8912, 0.9580 at 0..5 events,
    # shares 0, 0.02, ..., 0.10. The mixture's CDF at share 0.08 (4 events of 50; life 2
    # still at 0 events): (0.9048 + 0.8912) / 2 = 0.8980 < 0.9; at 0.10: (0.9048 + 0.9580) / 2
    # = 0.9314 >= 0.9, so the p90 share is 0.10
    lives, means = np.array([2.0, 50.0]), np.array([0.1, 2.5])
    assert share_quantile(lives, means, 1.0, 0.9) == pytest.approx(0.10)
    # at p95: (0.9048 + CDF50) / 2 >= 0.95 needs CDF50 >= 0.9952, 8 events (P(<= 7) = 0.9958,
    # P(<= 6) = 0.9858): share 0.14
    assert share_quantile(lives, means, 1.0, 0.95) == pytest.approx(0.14)


def test_prompts_per_prompt_step_by_hand():
    # lambda = 4/s, decode step d = 0.05 s, busy = 0.6, prompt steps of 0.25 s whatever m:
    # a = 0.6 (1 - e^-0.2) + 0.4 = 0.5087615, b = 1 - e^-1 = 0.6321206,
    # pi = a / (a + 1 - b) = 0.5803534, E[T] = pi 0.25 + (1 - pi)(0.6 * 0.05 + 0.4 / 4)
    # = 0.1996424, m = lambda E[T] / pi = 1.3760058
    from optimizer.costs.serving.decode_life import prompts_per_prompt_step
    a = 0.6 * -math.expm1(-0.2) + 0.4
    b = -math.expm1(-1.0)
    pi = a / (a + 1 - b)
    want = 4.0 * (pi * 0.25 + (1 - pi) * (0.6 * 0.05 + 0.4 / 4)) / pi
    assert want == pytest.approx(1.3760058, rel=1e-6)
    assert prompts_per_prompt_step(4.0, 0.05, 0.6, lambda m: 0.25) == pytest.approx(want, rel=1e-9)
    # a rare prompt on an idle queue is alone in its step
    assert prompts_per_prompt_step(1e-6, 0.05, 0.0, lambda m: 0.25) == pytest.approx(1.0)


def test_steps_per_prompt_by_hand():
    # room 1000: 2500 tokens fill 2 steps and 500 of a third; with nobody waiting the third is
    # a whole step (3), with rho = 0.4 the next prompt takes its free half 40 % of the time:
    # 2.5 + 0.6 x 0.5 = 2.8. 1000 tokens: exactly 1 step. 300 tokens (shorter than the room):
    # 0.3 + 0.6 x 0.7 = 0.72 of a step
    got = steps_per_prompt(np.array([2500.0, 1000.0, 300.0]), 1000.0, 0.4)
    assert got == pytest.approx([2.8, 1.0, 0.72], rel=1e-12)
    assert steps_per_prompt(np.array([2500.0]), 1000.0, 0.0) == pytest.approx([3.0])
    assert steps_per_prompt(np.array([2500.0]), 1000.0, 1.0) == pytest.approx([2.5])


def _shot_noise_by_brute_force(life, lives, running, delta_s, b_s, ks, mean_steps, early, draws, rng,
                               dispersion=0.0):
    """A life's primary decode-time deviation drawn directly: Poisson(mean_steps / E[K])
    prompts at uniform shares v of the life, each Delta K + b min(L (1 - v), L') (K drawn from
    ks, its decode's life L' from lives); running decodes, Poisson(running) or with
    ``dispersion`` > 0 Poisson(running G) with G gamma of mean 1 and variance dispersion /
    running (variance (1 + dispersion) running), with the rest R of their lives uniform on
    (0, mean life), b min(L, R) each; Poisson(early) b L each."""
    events = rng.poisson(mean_steps / np.mean(ks), draws)
    scale = rng.gamma(running / dispersion, dispersion / running, draws) if dispersion > 0 else 1.0
    olds = rng.poisson(running * scale, draws)
    news = rng.poisson(early, draws)
    owner = np.repeat(np.arange(draws), events)  # the draw each prompt belongs to
    others = rng.choice(lives, len(owner))
    marks = delta_s * rng.choice(ks, len(owner)) + b_s * np.minimum(life * (1 - rng.random(len(owner))), others)
    rests = b_s * np.minimum(life, np.mean(lives) * rng.random(olds.sum()))
    return (np.bincount(owner, marks, minlength=draws)
            + np.bincount(np.repeat(np.arange(draws), olds), rests, minlength=draws) + news * b_s * life)


def test_one_queue_tpot_quantile_against_drawn_cumulants():
    # one life of 100 steps at 10 ms mean TPOT, lambda = 2/s, n = 2, Delta = 50 ms, b = 1 ms,
    # K 1 or 3 steps (mean 2), 4 prompt steps per life on average (2 prompts). The function's
    # variance and third cumulant (closed forms) are checked against 400,000 direct draws of
    # the primary deviation: its p90 is 10 ms + sd (z + (z^2 - 1) gamma / 6) / L with
    # sd = sqrt(kappa_2) / (1 - u), u = lambda (Delta E[K] + b L / 2) = 2 (0.1 + 0.05) = 0.3;
    # the running decodes' count over-dispersed by the loop gain G = lambda (Delta E[K] + b L)
    # = 2 (0.1 + 0.1) = 0.4: variance n / (1 - G), dispersion G / (1 - G) = 2/3
    rng = np.random.default_rng(0)
    ks = np.array([1.0, 3.0])
    draws = _shot_noise_by_brute_force(100, np.array([100.0]), 2.0, 0.050, 0.001, ks, 4.0, 0.0, 400_000, rng,
                                       dispersion=2.0 / 3.0)
    k2, k3 = draws.var(), ((draws - draws.mean()) ** 3).mean()
    z = 1.2815515655446004
    want = 0.010 + math.sqrt(k2) / 0.7 * (z + (z * z - 1) * k3 / k2**1.5 / 6) / 100
    got = one_queue_tpot_quantile_s(np.array([100.0]), 0.010, 2.0, 2.0, 0.050, 0.001, ks, np.array([4.0]), 0.9)
    assert got == pytest.approx(want, rel=0.01)
    # a mixture of two equal lives is the one life
    two = one_queue_tpot_quantile_s(np.array([100.0, 100.0]), 0.010, 2.0, 2.0, 0.050, 0.001, ks,
                                    np.array([4.0, 4.0]), 0.9)
    assert two == pytest.approx(got, rel=1e-5)


def test_one_queue_tpot_quantile_mixes_lives():
    # lives of 10 and 1000 steps, half of the requests each: P(TPOT <= y) = (F_10(y) +
    # F_1000(y)) / 2, so the mixture's p90 lies between the two lives' own p90s, and as
    # F <= 1 it is at least the p80 of the life whose p90 is lower
    args = (0.010, 2.0, 2.0, 0.050, 0.0001, np.array([1.0]))
    def one(life, mean_steps, q):
        return one_queue_tpot_quantile_s(np.array([life]), *args, np.array([mean_steps]), q)
    ten, thousand = one(10.0, 0.4, 0.9), one(1000.0, 40.0, 0.9)
    mixed = one_queue_tpot_quantile_s(np.array([10.0, 1000.0]), *args, np.array([0.4, 40.0]), 0.9)
    assert thousand < mixed < ten
    assert mixed >= one(1000.0, 40.0, 0.8)


def test_shot_noise_cumulants_of_unequal_lives_against_draws():
    # lives of 20 and 300 steps (mean 160): a prompt's decode outlives the short life but
    # not always the rest of the long one (min(L w, L')), the running decodes' rest R is
    # uniform on (0, 160), 0.5 decodes start with it; the closed forms against 400,000 draws
    # per life (variance and third central moment within 2 %); u = lambda (Delta E[K] +
    # E[b min(L w, L')]): for L = 20, E[min(20 w, L')] = 10 for both L' (>= 20), so
    # u = 2 (0.05 x 2 + 0.001 x 10) = 0.22
    lives, ks = np.array([20.0, 300.0]), np.array([1.0, 3.0])
    mean_steps = np.array([0.8, 12.0])
    k2, k3, u = shot_noise_cumulants(lives, 2.0, 3.0, 0.050, 0.001, ks, mean_steps, 0.5)
    rng = np.random.default_rng(1)
    for i, life in enumerate(lives):
        draws = _shot_noise_by_brute_force(life, lives, 3.0, 0.050, 0.001, ks, mean_steps[i], 0.5, 400_000, rng)
        assert k2[i] == pytest.approx(draws.var(), rel=0.02)
        assert k3[i] == pytest.approx(((draws - draws.mean()) ** 3).mean(), rel=0.02)
    assert u[0] == pytest.approx(0.22, rel=1e-12)
    # the running decodes' count over-dispersed (variance 2.5 times its mean 3, a gamma-mixed
    # Poisson count): the closed forms against draws of that count
    k2, k3, _ = shot_noise_cumulants(lives, 2.0, 3.0, 0.050, 0.001, ks, mean_steps, 0.5, 1.5)
    for i, life in enumerate(lives):
        draws = _shot_noise_by_brute_force(life, lives, 3.0, 0.050, 0.001, ks, mean_steps[i], 0.5, 400_000, rng,
                                           dispersion=1.5)
        assert k2[i] == pytest.approx(draws.var(), rel=0.02)
        assert k3[i] == pytest.approx(((draws - draws.mean()) ** 3).mean(), rel=0.03)


def test_running_count_dispersion_by_hand():
    # lambda = 2/s, Delta = 50 ms, K 1 or 3 (mean 2), b = 1 ms, lives of 50 and 150 steps (mean
    # 100): G = 2 (0.05 x 2 + 0.001 x 100) = 0.4, V - 1 = 0.4 / 0.6; a gain past 0.9 is capped
    got = running_count_dispersion(np.array([50.0, 150.0]), 2.0, 0.050, 0.001, np.array([1.0, 3.0]))
    assert got == pytest.approx(2.0 / 3.0, rel=1e-12)
    assert running_count_dispersion(np.array([100.0]), 20.0, 0.050, 0.001, np.array([2.0])) == pytest.approx(9.0)


def test_running_count_dispersion_against_the_loop():
    # the loop alone, simulated step by step: decodes live L = 40 steps, a step takes
    # t = 1 + b (N - n) time units (N the decodes running), Poisson(lambda t) requests
    # start in it; n = 30, lambda = n / L, b = 0.5 / n, so G = lambda b L = 0.5 and the count's
    # variance is n / (1 - G) = 2 n (Poisson's n without the feedback)
    rng = np.random.default_rng(3)
    life, n = 40, 30.0
    rate, b = n / life, 0.5 / n
    starts = rng.poisson(rate, 60_000).astype(float)
    counts = np.empty(len(starts))
    running = starts[:life].sum()
    for j in range(life, len(starts)):
        counts[j] = running
        starts[j] = rng.poisson(rate * max(0.05, 1.0 + b * (running - n)))
        running += starts[j] - starts[j - life]
    counts = counts[5_000:]
    want = 1.0 + running_count_dispersion(np.array([float(life)]), rate, 0.0, b, np.array([1.0]))
    assert want == pytest.approx(2.0)
    assert counts.var() / counts.mean() == pytest.approx(want, rel=0.12)
