"""Queueing formulas used by the serving model (times in seconds, rates per second).

- Little's law: mean number in system L = lambda * W.
- M/G/1 (Poisson arrivals, one server, general service time S): the Pollaczek-Khinchine
  mean wait in queue W = lambda E[S^2] / (2 (1 - rho)), rho = lambda E[S].
  M/D/1 (S constant) gives W = rho S / (2 (1 - rho)); M/M/1 (S exponential, E[S^2] = 2 E[S]^2)
  gives W = rho E[S] / (1 - rho).
- Wait percentile, exponential-tail approximation: a request waits with probability rho;
  given that it waits, its wait is exponential with mean W / rho, so
  P(wait > t) = rho exp(-rho t / W) and the q-quantile is 0 when 1 - q >= rho, else
  (W / rho) ln(rho / (1 - q)). Exact for M/M/1; an approximation for M/D/1 and M/G/1.
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
    """q-quantile of the wait under the exponential-tail approximation (see module doc)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile}: must lie strictly between 0 and 1")
    if rho >= 1.0 or math.isinf(mean_wait_s):
        return math.inf
    if rho <= 0.0 or mean_wait_s <= 0.0 or 1.0 - quantile >= rho:
        return 0.0
    return mean_wait_s / rho * math.log(rho / (1.0 - quantile))
