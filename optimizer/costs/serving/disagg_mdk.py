"""The M/D/k queue (Crommelin, 1932): k servers, Poisson arrivals, one fixed service time S,
offered load a = lambda S = k rho < k.

Over one service time every customer in service at t has left by t + S, every one waiting at
t has started and is still in service at t + S, and every arrival in (t, t + S] is still
there, so the number in the system obeys exactly Q(t + S) = max(Q(t) - k, 0) + A, A ~
Poisson(a), whatever t is: its stationary law (the time average, which Poisson arrivals see)
has the generating function

    P(z) (z^k - A(z)) = A(z) N(z),   A(z) = exp(a (z - 1)),   N(z) = sum_{j<k} pi_j (z^k - z^j).

z^k = A(z) has k roots in the closed unit disk (Rouche): z = 1 and z_m = w^m exp(rho (z_m -
1)), m = 1..k-1, w = exp(2 pi i / k) (each the fixed point of a contraction there, found by
Newton). P is analytic in the disk, so N, a polynomial of degree k whose leading coefficient
is P(Q < k), vanishes at all k of them: N(z) = P(Q < k) (z - 1) prod_m (z - z_m), and N'(1) =
k - a (from P(1) = 1) gives

    P(Q >= k) = 1 - (k - a) / prod_{m=1}^{k-1} (1 - z_m)        (P(Q >= 1) = rho for k = 1).

The queue's tail decays as P(Q >= n) ~ sigma^n with 1 / sigma the root z* > 1 of z^k = A(z) on
the branch m = 0, i.e. of ln z = rho (z - 1) (for exponential service, M/M/k, sigma = rho).
"""

from __future__ import annotations

import math

import numpy as np

_FIXED_POINT_STEPS = 20
_NEWTON_STEPS = 40
_BISECTION_STEPS = 200


def _inner_roots(servers: int, rho: float) -> np.ndarray:
    """z_m, m = 1..k-1 (module doc), complex shape (k - 1,)."""
    turn = np.exp(2j * np.pi * np.arange(1, servers) / servers)
    z = np.zeros(servers - 1, dtype=complex)
    for _ in range(_FIXED_POINT_STEPS):  # the map is a contraction on the disk: near the root
        z = turn * np.exp(rho * (z - 1.0))
    for _ in range(_NEWTON_STEPS):  # then Newton on z - w^m exp(rho (z - 1))
        image = turn * np.exp(rho * (z - 1.0))
        step = (z - image) / (1.0 - rho * image)
        z = z - step
        if np.abs(step).max() < 1e-15:  # quadratic convergence: the next step is nothing
            break
    return z


def md_k_wait_probability(servers: int, offered_load: float) -> float:
    """P(Q >= k): an arrival finds every server busy (module doc)."""
    k, a = servers, offered_load
    if not 0.0 < a < k:
        raise ValueError(f"M/D/k needs 0 < a < k, got a={a}, k={k}")
    if k == 1:
        return a
    product = float(np.prod(1.0 - _inner_roots(k, a / k)).real)
    return min(1.0, max(0.0, 1.0 - (k - a) / product))


def md_k_decay(rho: float) -> float:
    """sigma = 1 / z*, z* > 1 the root of ln z = rho (z - 1): P(Q >= n + 1) / P(Q >= n) far out."""
    if not 0.0 < rho < 1.0:
        raise ValueError(f"M/D/k needs 0 < rho < 1, got {rho}")
    def above(z: float) -> bool:  # ln z > rho (z - 1): z is below the root
        return math.log(z) > rho * (z - 1.0)
    low = high = 1.0 / rho  # ln(1 / rho) > 1 - rho
    while above(high):
        high *= 2.0
    for _ in range(_BISECTION_STEPS):
        mid = (low + high) / 2.0
        if mid in (low, high):
            break
        low, high = (mid, high) if above(mid) else (low, mid)
    return 1.0 / low
