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
"""

from __future__ import annotations

import math


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


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability of waiting in M/M/k with offered load a = lambda E[S] (a < k), by the
    Erlang-B recursion B_i = a B_{i-1} / (i + a B_{i-1}), C = k B_k / (k - a (1 - B_k))."""
    if offered_load >= servers:
        return 1.0
    b = 1.0
    for i in range(1, servers + 1):
        b = offered_load * b / (i + offered_load * b)
    return servers * b / (servers - offered_load * (1.0 - b))


def mgk_mean_wait_s(rate_per_s: float, mean_service_s: float, cv2: float, servers: int) -> tuple[float, float]:
    """(mean wait, probability of waiting) of M/G/k by the Allen-Cunneen approximation
    W = C(k, a) E[S] / (k - a) * (1 + cv^2) / 2, a = lambda E[S]: exact for M/M/k (cv^2 = 1),
    and for k = 1 it is the Pollaczek-Khinchine formula. inf, 1 when a >= k."""
    a = rate_per_s * mean_service_s
    if a >= servers:
        return math.inf, 1.0
    c = erlang_c(servers, a)
    return c * mean_service_s / (servers - a) * (1.0 + cv2) / 2.0, c
