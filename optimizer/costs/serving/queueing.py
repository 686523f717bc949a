"""Queueing formulas used by the serving model (times in seconds, rates per second).

- Little's law: mean number in system L = lambda * W.
- M/G/1 (Poisson arrivals, one server, general service time S): the Pollaczek-Khinchine
  mean wait in queue W = lambda E[S^2] / (2 (1 - rho)), rho = lambda E[S].
  M/D/1 (S constant) gives W = rho S / (2 (1 - rho)); M/M/1 (S exponential, E[S^2] = 2 E[S]^2)
  gives W = rho E[S] / (1 - rho).
- M/G/k (k servers fed by one queue, what least-loaded routing over k replicas approaches):
  Allen-Cunneen W = C(k, a) E[S] / (k - a) * (1 + cv^2) / 2 with C the Erlang-C probability
  of waiting, a = lambda E[S]; exact for M/M/k, PK for k = 1.
- Wait percentile, exponential-tail approximation: a request waits with probability P
  (rho for M/G/1, C(k, a) for M/G/k); given that it waits, its wait is exponential with
  mean W / P, so P(wait > t) = P exp(-P t / W) and the q-quantile is 0 when 1 - q >= P, else
  (W / P) ln(P / (1 - q)). Exact for M/M/1 and M/M/k; an approximation otherwise.
- Least-loaded routing by outstanding count (decodes + prompts) over k replicas: a prompt can
  join a replica that is still prefilling an earlier one. That happens when one of the
  replica's own decodes finishes during that prefill (its count falls below the others') and
  the next arrival of the deployment, which goes to the least-loaded replica, comes before
  the prefill ends. Decodes finish as a Poisson stream at rate delta = n_a / life; the next
  arrival comes after an Exp(nu) delay, nu = k lambda. A departure at u in (0, S) is
  refilled at u + d and that prompt waits S - u - d, so the prompts that wait longer than t
  per prefill have mean delta h(S - t), h(x) = x - (1 - e^{-nu x}) / nu, and
  P(wait > t) = min(1, delta h(S - t)) (``refill_*``: first order in delta S; the prompts
  that join behind a refilled one are left out). For a prompt step (gated prompts) the
  probability of joining a replica in it is delta h(S) at most rho, the prompt steps' share
  of the time: the step's prompts count against the replica, so the router can avoid it,
  never prefer it (``prompt_step_join_probability``).
- One queue's prefill server works in whole steps (``step_discrete_service_s``): while
  prompt tokens wait at every step start the steps are full and a prompt takes its tokens'
  share of a full step's time (the fluid service S); a busy period ends with a step that
  holds fewer tokens than the room and costs w more than their share (the step's fixed part).
  An M/G/1 serves 1 / (1 - rho) prompts per busy period, so per prompt the server is busy
  S_d = S + (1 - lambda S_d) w = (S + w) / (1 + lambda w); M/G/1 at rho_d = lambda S_d.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


def littles_law_count(rate_per_s: float, time_in_system_s: float) -> float:
    """Mean number in the system L = lambda W."""
    return rate_per_s * time_in_system_s


def utilisation(rate_per_s: float, mean_service_s: float) -> float:
    """rho = lambda E[S]."""
    return rate_per_s * mean_service_s


def mg1_mean_wait_s(rate_per_s: float, mean_service_s: float, second_moment_s2: float) -> float:
    """Pollaczek-Khinchine mean wait in queue; inf when rho >= 1."""
    rho = utilisation(rate_per_s, mean_service_s)
    if rho >= 1.0:
        return math.inf
    return rate_per_s * second_moment_s2 / (2.0 * (1.0 - rho))


def md1_mean_wait_s(rate_per_s: float, service_s: float) -> float:
    """M/D/1 mean wait: PK with E[S^2] = S^2."""
    return mg1_mean_wait_s(rate_per_s, service_s, service_s * service_s)


def mm1_mean_wait_s(rate_per_s: float, mean_service_s: float) -> float:
    """M/M/1 mean wait: PK with E[S^2] = 2 E[S]^2."""
    return mg1_mean_wait_s(rate_per_s, mean_service_s, 2.0 * mean_service_s * mean_service_s)


def wait_quantile_s(mean_wait_s: float, rho: float, quantile: float) -> float:
    """q-quantile of the wait under the exponential-tail approximation (see module doc);
    ``rho`` is the probability of waiting at all."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile}: must lie strictly between 0 and 1")
    if rho >= 1.0 or math.isinf(mean_wait_s):
        return math.inf
    if rho <= 0.0 or mean_wait_s <= 0.0 or 1.0 - quantile >= rho:
        return 0.0
    return mean_wait_s / rho * math.log(rho / (1.0 - quantile))


def _refilled(x, departures_per_s: float, arrivals_per_s: float):
    """delta h(x): prompts per prefill that join it with more than S - x of it left; 0 where
    x <= 0 (``x`` a float or an array of them); 0 without departures or arrivals."""
    nu = arrivals_per_s
    if departures_per_s <= 0.0 or nu <= 0.0:
        return 0.0 if np.ndim(x) == 0 else np.zeros(np.shape(x))
    if np.ndim(x) == 0:
        return 0.0 if x <= 0.0 else departures_per_s * (x - (-math.expm1(-nu * x)) / nu)
    x = np.clip(x, 0.0, None)
    return departures_per_s * (x + np.expm1(-nu * x) / nu)


def refill_wait_tail(wait_s: float, service_s: float, departures_per_s: float, arrivals_per_s: float) -> float:
    """P(wait > t) behind a prefill under way on the joined replica (module doc)."""
    return min(1.0, _refilled(service_s - wait_s, departures_per_s, arrivals_per_s))


def refill_mean_wait_s(service_s: float, departures_per_s: float, arrivals_per_s: float) -> float:
    """Mean wait: the integral of the tail over (0, S),
    delta (S^2 / 2 - S / nu + (1 - e^{-nu S}) / nu^2) (without the cap at 1)."""
    nu, s = arrivals_per_s, service_s
    if s <= 0.0 or departures_per_s <= 0.0:
        return 0.0
    return departures_per_s * (s * s / 2.0 - s / nu + (-math.expm1(-nu * s)) / (nu * nu))


def refill_wait_quantile_s(service_s: float, departures_per_s: float, arrivals_per_s: float,
                           quantile: float) -> float:
    """q-quantile of the wait behind a prefill under way of ``service_s``: the one-point case
    of ``refill_law_wait_quantile_s``."""
    return refill_law_wait_quantile_s(np.array([service_s]), departures_per_s, arrivals_per_s, quantile)


def refill_law_wait_tail(wait_s: float, services_s: np.ndarray, departures_per_s: float,
                         arrivals_per_s: float) -> float:
    """P(wait > t) behind a prefill under way over equally likely prefill times
    ``services_s``: mean_i min(1, delta h(S_i - t)) (module doc; a replica prefilling a longer
    prompt collects more refills, each waiting the rest of it: length-biased)."""
    refilled = _refilled(np.asarray(services_s, dtype=float) - wait_s, departures_per_s, arrivals_per_s)
    return float(np.minimum(1.0, refilled).mean())


def refill_law_mean_wait_s(services_s: np.ndarray, departures_per_s: float, arrivals_per_s: float) -> float:
    """``refill_mean_wait_s`` averaged over equally likely prefill times ``services_s``."""
    return float(np.mean([refill_mean_wait_s(float(s), departures_per_s, arrivals_per_s) for s in services_s]))


def refill_law_wait_quantile_s(services_s: np.ndarray, departures_per_s: float, arrivals_per_s: float,
                               quantile: float) -> float:
    """q-quantile of ``refill_law_wait_tail``: 0 when its tail at 0 is at most 1 - q, else
    the t in (0, max S_i) with tail = 1 - q (bisection: the tail decreases in t)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile}: must lie strictly between 0 and 1")
    if refill_law_wait_tail(0.0, services_s, departures_per_s, arrivals_per_s) <= 1.0 - quantile:
        return 0.0
    low, high = 0.0, float(np.max(services_s))
    for _ in range(50):
        mid = (low + high) / 2.0
        low, high = (mid, high) if refill_law_wait_tail(mid, services_s, departures_per_s, arrivals_per_s) \
            > 1.0 - quantile else (low, mid)
    return high


def prompt_step_join_probability(service_s: float, departures_per_s: float, arrivals_per_s: float,
                                 rho: float) -> float:
    """P_join: probability that a prompt joins a replica whose prompt step is under way, on
    k > 1 replicas routed by outstanding count (module doc): the refills' first-order count
    delta h(S), at most rho, the prompt steps' share of a replica's time, which a router blind
    to the prefill would give (the prompt step's own prompts count against the replica, so
    the router can only avoid it, never prefer it)."""
    return min(rho, _refilled(service_s, departures_per_s, arrivals_per_s))


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability of waiting in M/M/k with offered load a = lambda E[S] (a < k), by the
    Erlang-B recursion B_i = a B_{i-1} / (i + a B_{i-1}), C = k B_k / (k - a (1 - B_k))."""
    if offered_load >= servers:
        return 1.0
    b = 1.0
    for i in range(1, servers + 1):
        b = offered_load * b / (i + offered_load * b)
    return servers * b / (servers - offered_load * (1.0 - b))


def step_discrete_service_s(fluid_service_s: float, partial_step_excess_s: float, rate_per_s: float) -> float:
    """S_d = (S + w) / (1 + lambda w), s: the prefill server's time per prompt on one queue
    (module doc) from the fluid service S (a prompt's tokens at a full step's rate), the
    excess w of a busy period's last, partial step over its tokens' share of a full step,
    and the arrival rate lambda; S_d -> S as rho_d -> 1 (the capacity does not move)."""
    return (fluid_service_s + partial_step_excess_s) / (1.0 + rate_per_s * partial_step_excess_s)


def mgk_mean_wait_s(rate_per_s: float, mean_service_s: float, cv2: float, servers: int) -> tuple[float, float]:
    """(mean wait, probability of waiting) of M/G/k by the Allen-Cunneen approximation
    W = C(k, a) E[S] / (k - a) * (1 + cv^2) / 2, a = lambda E[S]: exact for M/M/k (cv^2 = 1),
    and for k = 1 it is the Pollaczek-Khinchine formula. inf, 1 when a >= k."""
    a = rate_per_s * mean_service_s
    if a >= servers:
        return math.inf, 1.0
    c = erlang_c(servers, a)
    return c * mean_service_s / (servers - a) * (1.0 + cv2) / 2.0, c


# ----------------------------------------------------------------------------------------------
# Least-loaded routing over k replicas (join the shortest queue, JSQ). The decodes of the
# deployment are taken as Poisson with mean k n (M/G/inf: each request decodes for a time that
# does not depend on the others'), spread over the replicas as evenly as the router keeps them.


def _on_grid(mean: float) -> float:
    """``mean`` to 3 significant digits: the JSQ figures are memoised on it (relative error
    <= 5e-3, and still non-decreasing in the mean)."""
    return float(f"{mean:.3g}")


@lru_cache(maxsize=1 << 16)
def _jsq(mean: float, replicas: int) -> tuple[float, float, float]:
    """(E[floor(N / k)], P(N >= k), E[balanced count of 1 + N]) for N ~ Poisson(mean)."""
    values, probs = _poisson(mean)
    return (float(probs @ (values // replicas)), float(probs[values >= replicas].sum()),
            float(probs @ _balanced_seen(values + 1, replicas)))


def _poisson(mean: float) -> tuple[np.ndarray, np.ndarray]:
    """(values, probabilities) of a Poisson(mean) over mean +- 10 sd (the rest < 1e-20)."""
    if mean <= 0.0:
        return np.zeros(1, dtype=np.int64), np.ones(1)
    mode = int(mean)
    half = int(10.0 * math.sqrt(mean)) + 10
    low, high = max(0, mode - half), mode + half
    at_mode = math.exp(mode * math.log(mean) - mean - math.lgamma(mode + 1))
    up = at_mode * np.cumprod(np.concatenate(([1.0], mean / np.arange(mode + 1, high + 1))))
    down = at_mode * np.cumprod(np.arange(mode, low, -1) / mean)  # p(mode - 1) ... p(low)
    values = np.arange(low, high + 1, dtype=np.int64)
    probs = np.concatenate((down[::-1], up))
    return values, probs / probs.sum()


def poisson_points(mean: float) -> tuple[np.ndarray, np.ndarray]:
    """(values, probabilities) of a Poisson(mean) (the rest < 1e-20)."""
    return _poisson(mean)


def _balanced_seen(total: np.ndarray, replicas: int) -> np.ndarray:
    """Mean count of a request's replica when ``total`` >= 1 requests sit on ``replicas`` as
    evenly as possible (q or q + 1 each, q, r = divmod(total, k)): sum of counts^2 / total."""
    q_, r = np.divmod(total, replicas)
    return (r * (q_ + 1) ** 2 + (replicas - r) * q_ ** 2) / total


def jsq_joined(running: float, replicas: int) -> float:
    """Mean decodes of the replica a new request joins: the least loaded, floor(N / k) with
    N ~ Poisson(k n) (PASTA; n itself for one replica)."""
    if replicas == 1:
        return running
    return _jsq(_on_grid(replicas * running), replicas)[0]


def jsq_joined_busy(running: float, replicas: int) -> float:
    """Probability the joined replica holds a decode: P(N >= k) (1 - e^-n for one replica)."""
    if replicas == 1:
        return 1.0 - math.exp(-running)
    return _jsq(_on_grid(replicas * running), replicas)[1]


def jsq_busy_share(running: float, replicas: int) -> float:
    """Share of the replicas that hold a decode: E[min(N, k)] / k (spread as evenly as
    possible, min(N, k) replicas hold one; 1 - e^-n for one replica)."""
    if replicas == 1:
        return -math.expm1(-running)
    values, probs = _poisson(_on_grid(replicas * running))
    return float(probs @ np.minimum(values, replicas)) / replicas


def jsq_joined_quantile(running: float, replicas: int, z: float) -> float:
    """Decodes of the joined replica at the standard-normal quantile z of N (normal
    approximation k n + z sqrt(k n)), with E[floor(x / k)] ~ x / k - (k - 1) / 2k; the mean
    (``jsq_joined``) for z <= 0."""
    if z <= 0.0:
        return jsq_joined(running, replicas)
    total = replicas * running + z * math.sqrt(replicas * running)
    return max(jsq_joined(running, replicas), total / replicas - (replicas - 1) / (2.0 * replicas))


def jsq_seen(running: float, replicas: int) -> float:
    """Mean decodes of a decoding request's replica, itself included: the balanced count of
    1 + N' requests, N' ~ Poisson(k n) the others (Palm; 1 + n for one replica)."""
    if replicas == 1:
        return 1.0 + running
    return _jsq(_on_grid(replicas * running), replicas)[2]


def jsq_seen_quantile(running: float, replicas: int, z: float) -> float:
    """``jsq_seen`` of a request whose life-averaged others count sits at the standard-normal
    quantile z: a count of Poisson arrivals averaged over a window as long as the life has
    variance 2/3 of its mean (M/D/inf), so N' = k n + z sqrt(2 k n / 3); linear between
    integers."""
    mean = replicas * running
    others = max(0.0, mean + z * math.sqrt(2.0 * mean / 3.0))
    low = math.floor(others)
    at = _balanced_seen(np.array([low + 1, low + 2]), replicas)
    value = float(at[0] + (others - low) * (at[1] - at[0]))
    return max(value, jsq_seen(running, replicas))


# ----------------------------------------------------------------------------------------------
# Least-loaded routing over OUTSTANDING requests (waiting and prefilling prompts + decodes),
# what the engine's router counts. Each request stays for its own time whatever the others do
# (infinite servers) and every arrival joins the replica with the fewest. k replicas do not
# stay balanced: departures thin them at random between arrivals. Mean-field model of join the
# shortest of d queues (Mitzenmacher's supermarket model, here with infinite servers) taken at
# d = k (the joined replica is the least of k whose counts are treated as independent): x_i,
# the share of replicas holding at least i requests, balances at each level the replicas that
# rise to i (an arrival joins one holding i - 1: the least of d holds i - 1 with probability
# x_{i-1}^d - x_i^d) and those that fall from i (each of i requests leaves at rate 1 / T):
#     a (x_{i-1}^d - x_i^d) = i (x_i - x_{i+1}),   x_0 = 1,   a = lambda T per replica,
# solved downwards from a seed far above a (summed over the levels above i it reads
# a x_{i-1}^d = i x_i + sum_{j > i} x_j), the seed by bisection until sum x_i = a. d = 1 gives
# Poisson(a) (random routing). Treating the k counts as independent misses that they are
# negatively correlated (their total is Poisson(k a)): against a simulation of 8 such queues
# at a = 1.5 the model's E[min] is 0.725, the simulated 0.80 (tests). The least of k replicas
# holds at least i with probability
# x_i^k; a request's own replica holds E[c^2] / E[c] (Palm: weighted by its count).


def _log_levels_from(load: float, d: int, log_seeds: np.ndarray, top: int, bottom: int) -> np.ndarray:
    """ln x_bottom .. ln x_top (rows) for each seed ln x_top in ``log_seeds`` (columns) by the
    balance summed over the levels above i, a x_{i-1}^d = i x_i + sum_{j > i} x_j (stable
    downwards; in logarithms, as x falls doubly exponentially above a when d > 1)."""
    logs = np.empty((top - bottom + 1, len(log_seeds)))
    logs[-1] = log_seeds
    log_above = np.full(len(log_seeds), -np.inf)  # ln of the sum of x_j over j > i
    log_load = math.log(load)
    for row, i in zip(range(top - bottom, 0, -1), range(top, bottom, -1)):
        here = math.log(i) + logs[row]
        logs[row - 1] = (np.logaddexp(here, log_above) - log_load) / d
        log_above = np.logaddexp(log_above, logs[row])
    return logs


_SEEDS = 64  # seeds tried at once per pass of the search below


@lru_cache(maxsize=1 << 14)
def _outstanding_levels(load: float, replicas: int) -> tuple[int, tuple[float, ...]]:
    """(b, (x_b, x_{b+1}, ...)): the share x_i of replicas holding at least i outstanding
    requests (mean-field least-loaded routing, above; x_i = 1 for i < b, 0 past the last),
    ``load`` = requests per replica (a); the seed x_top (top far above a) found on a grid of
    u = ln(-ln x_top) refined pass by pass (the sum of x_i falls as u grows) until
    sum x_i = a (then x_0 = 1), the last pass interpolated linearly."""
    if load <= 0.0:
        return 1, ()
    # d = 1 is Poisson(a); for d >= 2 the counts stay within a few of a (variance
    # a (1 + E[min]) - a^2 stays below 4 for a <= 400): x_i = 1 below a - 30 (bottom)
    # (above a the share falls doubly exponentially: x_i = 0 past a + 12)
    half = int(8.0 * math.sqrt(load)) + 20 if replicas == 1 else 30
    top = int(load) + (half if replicas == 1 else 12)
    bottom = max(1, int(load) - half)
    low, high = -5.0, 700.0
    with np.errstate(over="ignore", under="ignore"):
        for _ in range(4):
            grid = np.linspace(low, high, _SEEDS)
            sums = bottom - 1 + np.exp(_log_levels_from(load, replicas, -np.exp(grid), top, bottom)).sum(axis=0)
            above = int(np.count_nonzero(sums > load))  # sums fall along the grid
            if above == 0 or above == _SEEDS:
                break
            low, high = grid[above - 1], grid[above]
            s_low, s_high = sums[above - 1], sums[above]
            if high - low < 1e-9:
                break
        u = low + (s_low - load) / (s_low - s_high) * (high - low) if above and above < _SEEDS else grid[0]
        xs = np.exp(_log_levels_from(load, replicas, np.array([-math.exp(u)]), top, bottom)[:, 0])
    return bottom, tuple(float(v) for v in xs)


def _grid_pair(value: float) -> tuple[float, float, float]:
    """(low, high, weight of high): the grid points around ``value``, 20 per unit of its
    leading digit (1.00, 1.05, 1.10, ...; 10.0, 10.5, ...)."""
    if value <= 0.0:
        return 0.0, 0.0, 0.0
    step = 10.0 ** (math.floor(math.log10(value)) - 1) / 2.0
    index = math.floor(value / step + 1e-9)
    return round(index * step, 12), round((index + 1) * step, 12), min(1.0, max(0.0, value / step - index))


def jsq_outstanding(outstanding: float, replicas: int, others_share: float = 0.0) -> tuple[float, float, float, float]:
    """(mean outstanding of the replica an arrival joins E[min], P(it holds any), mean
    outstanding of a request's own replica, itself included, E[c^2] / E[c], share of the
    replicas holding a request not of a kind that makes ``others_share`` of them,
    sum_c P(c) (1 - s^c)) when each of ``replicas`` holds ``outstanding`` requests on
    average, routed to the least-loaded one (mean-field model above); memoised on a grid
    (``_grid_pair``) and linear between its points (continuous in ``outstanding``)."""
    low, high, weight = _grid_pair(outstanding)
    at_low = _jsq_at(low, replicas, others_share)
    if weight <= 0.0:
        return at_low
    at_high = _jsq_at(high, replicas, others_share)
    return tuple(a + weight * (b - a) for a, b in zip(at_low, at_high))


def _jsq_at(load: float, replicas: int, others_share: float) -> tuple[float, float, float, float]:
    least, busy, seen, counts, probs = _jsq_outstanding(load, replicas)
    if others_share <= 0.0:
        return least, busy, seen, 1.0 - float(probs[counts == 0].sum())
    return least, busy, seen, float(probs @ -np.expm1(counts * math.log(min(others_share, 1.0))))


@lru_cache(maxsize=1 << 14)
def _jsq_outstanding(load: float, replicas: int) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    counts, probs = jsq_outstanding_count_of(load, replicas)
    mean = float(probs @ counts)
    if mean <= 0.0:
        return 0.0, 0.0, 1.0, counts, probs
    bottom, xs = _outstanding_levels(load, replicas)
    least = np.array(xs) ** replicas  # P(min >= i), i >= b (1 below)
    return (bottom - 1 + float(least.sum()), float(least[0]) if bottom == 1 else 1.0,
            float(probs @ counts**2) / mean, counts, probs)


def jsq_outstanding_count_of(outstanding: float, replicas: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts i, P(a replica holds i)) under the mean-field model (above) at ``outstanding``
    (taken exactly: memoise it upstream), the counts with a positive probability only."""
    if outstanding <= 0.0:
        return np.zeros(1, dtype=np.int64), np.ones(1)
    bottom, xs = _outstanding_levels(outstanding, replicas)
    levels = np.array((1.0, *xs, 0.0))  # x_{b-1} = 1, x_b, ..., 0
    return np.arange(bottom - 1, bottom - 1 + len(levels) - 1), levels[:-1] - levels[1:]


def jsq_joins_during(outstanding: float, replicas: int, rate_per_s: float, duration_s: float) -> float:
    """P(at least one later arrival joins a replica during ``duration_s`` after a prompt joined
    it), least-loaded routing over ``replicas`` holding ``outstanding`` requests each (the
    mean-field model above, ties shared evenly): the prompt joined a replica at the least
    count i (P(min = i) = x_i^k - x_{i+1}^k) and left it at c = i + 1; the model's own flow
    gives an arrival to a replica at c with probability (x_c^k - x_{c+1}^k), shared by the
    P(c) = x_c - x_{c+1} replicas there, so such a replica takes arrivals at
    lambda_c = lambda (x_c^k - x_{c+1}^k) / (x_c - x_{c+1}) (lambda per replica; the rates
    over the counts average to lambda), Poisson over the duration: sum_i P(min = i)
    (1 - e^{-lambda_{i+1} t}); linear between the grid points of ``_grid_pair``."""
    if outstanding <= 0.0 or rate_per_s <= 0.0 or duration_s <= 0.0:
        return 0.0
    low, high, weight = _grid_pair(outstanding)
    def at(load):
        least, join_rates = _joins_after_join(load, replicas)
        return float(least @ -np.expm1(-rate_per_s * duration_s * join_rates))
    return at(low) if weight <= 0.0 else at(low) + weight * (at(high) - at(low))


@lru_cache(maxsize=1 << 14)
def _joins_after_join(load: float, replicas: int) -> tuple[np.ndarray, np.ndarray]:
    """(P(min = i), lambda_{i+1} / lambda) over the counts i (``jsq_joins_during``)."""
    if load <= 0.0:
        return np.ones(1), np.ones(1)
    _, xs = _outstanding_levels(load, replicas)
    at_least = np.array((1.0, *xs, 0.0, 0.0))  # x_{b-1} = 1, x_b, ..., x_top, 0, 0 (below b - 1 no one)
    least = at_least[:-1] ** replicas - at_least[1:] ** replicas  # P(min = i), i >= b - 1
    share = at_least[:-1] - at_least[1:]  # P(c = i)
    flow = least  # x_c^k - x_{c+1}^k at c
    ratio = np.divide(flow[1:], share[1:], out=np.zeros(len(share) - 1), where=share[1:] > 1e-300)
    return least[:-1], ratio
