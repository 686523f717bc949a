"""Queueing formulas of the serving model against closed forms worked by hand and against
an independent simulation (Lindley's recursion of a single-server FIFO queue)."""

import math
import random

import pytest

from optimizer.costs.serving import queueing as q


def test_littles_law():
    # 3 requests/s, each 2 s in the system: 3 * 2 = 6 in the system on average
    assert q.littles_law_count(3.0, 2.0) == pytest.approx(6.0)


def test_md1_mean_wait_by_hand():
    # lambda = 0.5/s, S = 1 s: rho = 0.5, W = rho S / (2 (1 - rho)) = 0.5 / 1 = 0.5 s
    assert q.md1_mean_wait_s(0.5, 1.0) == pytest.approx(0.5)
    # lambda = 8/s, S = 0.1 s: rho = 0.8, W = 0.8 * 0.1 / 0.4 = 0.2 s
    assert q.md1_mean_wait_s(8.0, 0.1) == pytest.approx(0.2)


def test_mm1_mean_wait_by_hand():
    # M/M/1 closed form W_q = lambda / (mu (mu - lambda)); lambda = 0.5, mu = 1: 0.5 / 0.5 = 1 s
    assert q.mm1_mean_wait_s(0.5, 1.0) == pytest.approx(1.0)
    # lambda = 3, mu = 4: 3 / (4 * 1) = 0.75 s
    assert q.mm1_mean_wait_s(3.0, 0.25) == pytest.approx(0.75)


def test_pollaczek_khinchine_general_and_overload():
    # lambda = 2, E[S] = 0.25, E[S^2] = 0.1: rho = 0.5, W = 2 * 0.1 / (2 * 0.5) = 0.2 s
    assert q.mg1_mean_wait_s(2.0, 0.25, 0.1) == pytest.approx(0.2)
    assert q.mg1_mean_wait_s(4.0, 0.25, 0.1) == math.inf  # rho = 1


def test_wait_quantile_exact_for_mm1():
    # M/M/1, lambda = 0.5, mu = 1: P(W > t) = rho exp(-(mu - lambda) t) = 0.5 exp(-t / 2);
    # P(W > t) = 0.1 at t = 2 ln 5 = 3.2189 s; at the median P(W > 0) = 0.5 already: t = 0
    w = q.mm1_mean_wait_s(0.5, 1.0)
    assert q.wait_quantile_s(w, 0.5, 0.9) == pytest.approx(2 * math.log(5))
    assert q.wait_quantile_s(w, 0.5, 0.5) == 0.0
    assert q.wait_quantile_s(w, 1.0, 0.9) == math.inf
    with pytest.raises(ValueError):
        q.wait_quantile_s(w, 0.5, 1.0)


def _lindley_waits(rate, service, n, seed, exponential=False):
    """Waits of n customers of a FIFO single server: W_{k+1} = max(0, W_k + S_k - A_{k+1})."""
    rng = random.Random(seed)
    waits, w = [], 0.0
    for _ in range(n):
        waits.append(w)
        s = rng.expovariate(1 / service) if exponential else service
        w = max(0.0, w + s - rng.expovariate(rate))
    return waits


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_against_simulation(rho):
    waits = _lindley_waits(rho, 1.0, 200_000, seed=7)
    assert sum(waits) / len(waits) == pytest.approx(q.md1_mean_wait_s(rho, 1.0), rel=0.08)


def test_mm1_quantile_against_simulation():
    waits = sorted(_lindley_waits(0.7, 1.0, 200_000, seed=3, exponential=True))
    w = q.mm1_mean_wait_s(0.7, 1.0)
    assert waits[int(0.9 * len(waits))] == pytest.approx(q.wait_quantile_s(w, 0.7, 0.9), rel=0.08)


def test_erlang_c_and_mgk_by_hand():
    # M/M/2, lambda = 1, mu = 1 (a = 1): C = (a^2/2! * 2/(2-1)) / (1 + a + a^2/2! * 2/(2-1))
    # = 1 / 3; W = C / (k mu - lambda) = 1/3 s
    assert q.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    wait, p_wait = q.mgk_mean_wait_s(1.0, 1.0, 1.0, 2)
    assert (wait, p_wait) == pytest.approx((1 / 3, 1 / 3))
    # one server: C = rho and M/G/k is Pollaczek-Khinchine (M/D/1 with cv^2 = 0)
    assert q.erlang_c(1, 0.8) == pytest.approx(0.8)
    assert q.mgk_mean_wait_s(8.0, 0.1, 0.0, 1) == pytest.approx((q.md1_mean_wait_s(8.0, 0.1), 0.8))
    assert q.mgk_mean_wait_s(3.0, 1.0, 0.0, 3)[0] == math.inf


def test_mmk_against_simulation():
    # four servers fed by one FIFO queue, exponential service: the mean wait by simulation
    rng = random.Random(11)
    free = [0.0] * 4
    t, waits = 0.0, []
    for _ in range(200_000):
        t += rng.expovariate(3.0)  # a = 3 on 4 servers of mean 1 s
        k = min(range(4), key=free.__getitem__)
        start = max(t, free[k])
        waits.append(start - t)
        free[k] = start + rng.expovariate(1.0)
    wait, _ = q.mgk_mean_wait_s(3.0, 1.0, 1.0, 4)
    assert sum(waits) / len(waits) == pytest.approx(wait, rel=0.08)


def _poisson_pmf(mean, count):
    return math.exp(count * math.log(mean) - mean - math.lgamma(count + 1))


def _balanced(total, replicas):
    """Mean count of a request's replica, from the list of counts (q + 1 on r replicas)."""
    q_, r = divmod(total, replicas)
    counts = [q_ + 1] * r + [q_] * (replicas - r)
    return sum(c * c for c in counts) / total


def test_jsq_one_replica_is_pasta():
    # one queue: the joined replica holds the mean n, a decoding request sees itself + n
    from optimizer.costs.serving.queueing import jsq_joined, jsq_joined_busy, jsq_seen
    assert jsq_joined(2.3, 1) == 2.3 and jsq_seen(2.3, 1) == pytest.approx(3.3)
    assert jsq_joined_busy(2.3, 1) == pytest.approx(1 - math.exp(-2.3))


def test_jsq_figures_by_enumeration():
    # three replicas, 2.5 decodes each on average (N ~ Poisson(7.5), on the 3-digit grid
    # exactly): E[floor(N / 3)], P(N >= 3) and E[balanced count of 1 + N] summed term by term
    from optimizer.costs.serving.queueing import jsq_joined, jsq_joined_busy, jsq_seen
    pmf = [_poisson_pmf(7.5, i) for i in range(120)]
    assert jsq_joined(2.5, 3) == pytest.approx(sum(p * (i // 3) for i, p in enumerate(pmf)), rel=1e-12)
    assert jsq_joined_busy(2.5, 3) == pytest.approx(sum(pmf[3:]), rel=1e-12)
    assert jsq_seen(2.5, 3) == pytest.approx(sum(p * _balanced(i + 1, 3) for i, p in enumerate(pmf)), rel=1e-12)
    # the least-loaded replica holds fewer than the mean, a decoding request's more
    assert jsq_joined(2.5, 3) < 2.5 < jsq_seen(2.5, 3)


def test_refill_wait_against_its_mechanism():
    # the mechanism of queueing.refill_*: departures from the joined replica, Poisson at rate
    # delta over a prefill of S seconds, each refilled after an Exp(nu) delay; a refill at
    # u + d < S waits S - u - d. Monte Carlo of the expected refills per prefill waiting
    # longer than t against delta h(S - t), h(x) = x - (1 - e^{-nu x}) / nu
    import numpy as np
    rng = np.random.default_rng(7)
    delta, nu, service = 2.0, 30.0, 0.15
    prefills = 200_000
    counts = rng.poisson(delta * service, size=prefills)
    u = rng.uniform(0, service, size=counts.sum())
    d = rng.exponential(1 / nu, size=counts.sum())
    waits = service - u - d
    for t in (0.0, 0.03, 0.08, 0.12):
        simulated = np.count_nonzero(waits > t) / prefills
        assert q.refill_wait_tail(t, service, delta, nu) == pytest.approx(simulated, rel=0.03)
    # the mean is the tail's integral: (waits > 0) summed, per prefill
    assert q.refill_mean_wait_s(service, delta, nu) == pytest.approx(waits[waits > 0].sum() / prefills, rel=0.03)
    # the quantile solves tail = 1 - q; 0 when the tail at 0 is already below 1 - q
    t90 = q.refill_wait_quantile_s(service, delta * 5, nu, 0.9)
    assert q.refill_wait_tail(t90, service, delta * 5, nu) == pytest.approx(0.1, abs=1e-9)
    assert q.refill_wait_quantile_s(service, delta, nu, 0.5) == 0.0  # tail(0) = 0.3 (1 - (1 - e^-4.5) / 4.5) = 0.23 < 0.5
    assert q.refill_wait_tail(0.0, service, 0.0, nu) == 0.0


def test_refill_law_against_its_mechanism():
    # the refills of prefills of two equally likely lengths (0.05 and 0.25 s): per prefill,
    # Poisson(delta S) departures at uniform u, each refilled after an Exp(nu) delay d, waiting
    # S - u - d when positive; a longer prefill collects more refills (length-biased)
    import numpy as np
    rng = np.random.default_rng(11)
    delta, nu, services = 1.5, 30.0, np.array([0.05, 0.25])
    prefills = 200_000
    lengths = services[rng.integers(0, 2, size=prefills)]
    counts = rng.poisson(delta * lengths)
    each = np.repeat(lengths, counts)
    waits = each - rng.uniform(0, 1, size=counts.sum()) * each - rng.exponential(1 / nu, size=counts.sum())
    for t in (0.0, 0.02, 0.1, 0.2):
        simulated = np.count_nonzero(waits > t) / prefills
        assert q.refill_law_wait_tail(t, services, delta, nu) == pytest.approx(simulated, rel=0.03)
    assert q.refill_law_mean_wait_s(services, delta, nu) == pytest.approx(waits[waits > 0].sum() / prefills, rel=0.03)
    # above the fixed mean length's (0.15 s): E[h(S)] > h(E[S]) for the convex h
    assert q.refill_law_wait_tail(0.0, services, delta, nu) > q.refill_wait_tail(0.0, 0.15, delta, nu)
    t90 = q.refill_law_wait_quantile_s(services, delta * 5, nu, 0.9)
    assert q.refill_law_wait_tail(t90, services, delta * 5, nu) == pytest.approx(0.1, abs=1e-9)
    # one length: the fixed-length functions
    assert q.refill_law_wait_tail(0.03, np.array([0.15]), delta, nu) == pytest.approx(
        q.refill_wait_tail(0.03, 0.15, delta, nu), rel=1e-12)


def test_prompt_step_join_probability_by_hand():
    # delta h(S), h(x) = x - (1 - e^{-nu x}) / nu: S = 0.1 s, nu = 10/s, delta = 2/s:
    # h = 0.1 - (1 - e^-1) / 10 = 0.1 - 0.0632121 = 0.0367879, delta h = 0.0735759
    assert q.prompt_step_join_probability(0.1, 2.0, 10.0, 0.5) == pytest.approx(0.0735759, rel=1e-6)
    # at most rho, the prompt steps' share of the time (a router blind to the prefill)
    assert q.prompt_step_join_probability(0.1, 2.0, 10.0, 0.05) == 0.05
    # near saturation the refills' first-order count passes 1: the cap holds it at rho
    # (delta = 40/s: 40 x 0.0367879 = 1.47)
    assert q.prompt_step_join_probability(0.1, 40.0, 10.0, 0.9) == 0.9
    assert q.prompt_step_join_probability(0.1, 0.0, 10.0, 0.9) == 0.0


def _mean_field_by_integration(load, d, levels=40, dt=2e-3, steps=60_000):
    """x_i of the mean-field least-loaded routing by integrating its ODE from empty queues
    (independent of the shooting in queueing): dx_i/dt = a (x_{i-1}^d - x_i^d) - i (x_i - x_{i+1})."""
    import numpy as np
    x = np.zeros(levels + 2)
    x[0] = 1.0
    i = np.arange(1, levels + 1)
    for _ in range(steps):
        x[1:-1] += dt * (load * (x[:-2] ** d - x[1:-1] ** d) - i * (x[1:-1] - x[2:]))
    return x


@pytest.mark.parametrize("load,replicas", [(1.65, 8), (0.8, 4), (3.5, 2), (6.0, 32)])  # on the grid
def test_jsq_outstanding_against_its_ode(load, replicas):
    # E[min] = sum_i x_i^k, P(min >= 1) = x_1^k and E[c^2] / E[c] from the integrated levels
    import numpy as np
    x = _mean_field_by_integration(load, replicas)
    shares = x[:-1] - x[1:]
    counts = np.arange(len(shares))
    least, busy, seen, holding = q.jsq_outstanding(load, replicas, 0.25)
    assert least == pytest.approx((x[1:] ** replicas).sum(), rel=1e-4)
    assert busy == pytest.approx(x[1] ** replicas, rel=1e-4)
    assert seen == pytest.approx((shares * counts**2).sum() / (shares * counts).sum(), rel=1e-4)
    assert holding == pytest.approx((shares * (1 - 0.25**counts)).sum(), rel=1e-4)
    # by hand from the balance: E[c^2] = sum_i i * i (x_i - x_{i+1}) = a sum_i i (x_{i-1}^d -
    # x_i^d) = a (1 + E[min]), so a request's own replica holds 1 + what an arrival joins
    assert seen == pytest.approx(1.0 + least, rel=1e-9)
    # the least-loaded replica holds fewer than the mean, a request's own more
    assert least < load < seen


def test_jsq_outstanding_limits():
    # one replica (d = 1): Poisson(a), so E[min] = a, P(>= 1) = 1 - e^-a, a request sees 1 + a
    # (the seed search stops at a bracket of 705 / 63^4 in ln(-ln x_top): to 1e-5 here)
    least, busy, seen, _ = q.jsq_outstanding(1.2, 1)
    assert (least, busy, seen) == pytest.approx((1.2, 1 - math.exp(-1.2), 2.2), rel=1e-5)
    # the least of more replicas holds fewer
    assert q.jsq_outstanding(5.5, 32)[0] < q.jsq_outstanding(5.5, 8)[0] < q.jsq_outstanding(5.5, 2)[0] < 5.5
    # continuous between the grid points (linear): 1.625 is halfway between 1.60 and 1.65
    mid = q.jsq_outstanding(1.625, 8)[0]
    assert mid == pytest.approx((q.jsq_outstanding(1.6, 8)[0] + q.jsq_outstanding(1.65, 8)[0]) / 2, rel=1e-12)
    assert q.jsq_outstanding(0.0, 8)[:3] == (0.0, 0.0, 1.0)


def test_jsq_outstanding_against_simulation():
    # least-loaded routing over 8 infinite-server queues (each request leaves at rate 1,
    # a = 1.5 per queue, arrivals at rate 12 to the least-loaded queue, lowest index on
    # ties): E[min] at arrivals 0.80. The mean field treats the k counts as independent, but
    # they are negatively correlated (their total is Poisson(k a)), so it sits below: 0.725,
    # within 12 %
    import numpy as np
    rng = np.random.default_rng(3)
    k, load = 8, 1.5
    counts = np.zeros(k, dtype=np.int64)
    seen_min, t = [], 0
    while t < 300_000:
        total = counts.sum()
        if rng.random() < k * load / (k * load + total):  # an arrival
            j = int(np.argmin(counts))
            if t > 20_000:
                seen_min.append(counts[j])
            counts[j] += 1
        else:  # a departure, each request alike
            j = int(np.searchsorted(np.cumsum(counts), rng.integers(total), side="right"))
            counts[j] -= 1
        t += 1
    simulated = float(np.mean(seen_min))
    assert 0.88 * simulated <= q.jsq_outstanding(load, k)[0] <= simulated


def test_step_discrete_service_by_hand():
    # S_d = (S + w) / (1 + lambda w): S = 0.1 s, w = 0.02 s, lambda = 5/s -> 0.12 / 1.1 =
    # 0.109091 s; it solves S_d = S + (1 - lambda S_d) w (one partial step per busy period,
    # 1 - rho_d busy periods per prompt): 0.1 + (1 - 0.545455) 0.02 = 0.109091
    s_d = q.step_discrete_service_s(0.1, 0.02, 5.0)
    assert s_d == pytest.approx(0.12 / 1.1, rel=1e-12)
    assert s_d == pytest.approx(0.1 + (1 - 5.0 * s_d) * 0.02, rel=1e-12)
    # at the fluid capacity (lambda S = 1) the busy period never ends: S_d = S (0.12 / 1.2)
    assert q.step_discrete_service_s(0.1, 0.02, 10.0) == pytest.approx(0.1, rel=1e-12)
    # no excess (a step's time proportional to its tokens): the fluid service
    assert q.step_discrete_service_s(0.1, 0.0, 5.0) == 0.1
