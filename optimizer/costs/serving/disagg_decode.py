"""The decode pool of a disaggregated service: one replica that only generates (plain Python).

Input: ``step_ns(decodes)``, the time of a decode-only engine step of one queue (an
attention-DP rank with its own scheduler) advancing ``decodes`` requests at the mean decode
context (integer ns: ``serving.replica`` with no prompt chunk, or a test double), the queues
``k`` of the replica, the output tokens ``D`` and the running-request cap ``B`` per queue.

Arrivals: transferred requests reach the replica as a Poisson stream of rate lambda (the
router splits the deployment's rate evenly over the decode replicas) and join the queue with
the fewest running requests. Each decodes ``D - 1`` steps (the prefill pool gives the first
token). Steady state per queue, with the least-loaded routing of ``queueing.jsq_*``:
    n = (lambda / k) (D - 1) TPOT          (Little's law)
    TPOT = step(n')                        (n' = jsq_seen(n, k): the decodes a decoding
                                            request's step holds, itself included)
solved by fixed-point iteration from n = 0 (the least fixed point; every map is
non-decreasing in n). Not sustainable when the iterates reach ``B``.
At the SLO percentile (standard-normal quantile z):
    TPOT_q = step(jsq_seen_quantile(n, k, z))   (the count over a request's life at its quantile)
    admitted: jsq_joined_quantile(n, k, z) + 1 <= B   (the queue a request joins has a free slot
                                                       at the quantile: no wait for a slot)
Goodput: the highest rate meeting both (bisection: each is monotone in the rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving.metrics import largest_rate
from optimizer.costs.serving.service_types import z_of

DecodeStep = Callable[[int], int]  # decodes -> ns of a decode-only step
_FIXED_POINT_STEPS = 500


@dataclass(frozen=True)
class DecodeQueue:
    """What the decode model needs of one decode replica."""

    step_ns: DecodeStep
    queues: int  # k, attention-DP schedulers
    output_tokens: int  # D, per request (mean); D - 1 decode steps each
    cap: int  # B, running requests per queue


@dataclass(frozen=True)
class DecodeMetrics:
    """Predicted figures of one decode replica at one rate (per replica)."""

    rate_rps: float
    stable: bool
    running: float  # n, mean running requests per queue
    tpot_mean_ms: float
    tpot_p50_ms: float
    tpot_p90_ms: float
    tpot_p99_ms: float
    admitted_at: dict[int, bool]  # percentile -> the joined queue has a slot at that quantile
    utilization: float  # n / B

    def tpot_at(self, percentile: int) -> float:
        return {50: self.tpot_p50_ms, 90: self.tpot_p90_ms, 99: self.tpot_p99_ms}[percentile]


def _at(step: DecodeStep, count: float) -> float:
    """step(count) at a fractional count >= 1, linear between the integers around it."""
    low = max(1, math.floor(count))
    frac = count - low
    base = step(low)
    return base if frac <= 1e-12 else base + frac * (step(low + 1) - base)


def steady_running(dq: DecodeQueue, rate_rps: float) -> float | None:
    """Least fixed point n of the steady state at ``rate_rps`` per replica (module doc), or
    None when it reaches the cap B."""
    per_queue = rate_rps / dq.queues
    steps = max(0, dq.output_tokens - 1)
    running = 0.0
    for _ in range(_FIXED_POINT_STEPS):
        tpot_s = _at(dq.step_ns, q.jsq_seen(running, dq.queues)) * 1e-9
        nxt = q.littles_law_count(per_queue, steps * tpot_s)
        if nxt >= dq.cap:
            return None
        if nxt - running <= 1e-9 * max(1.0, nxt):
            return nxt
        running = nxt
    return None


def predict_decode(dq: DecodeQueue, rate_rps: float) -> DecodeMetrics:
    """Figures of the replica at ``rate_rps`` (infinite TPOT when not sustainable)."""
    n = steady_running(dq, rate_rps)
    if n is None:
        inf = math.inf
        return DecodeMetrics(rate_rps, False, float(dq.cap), inf, inf, inf, inf,
                             {p: False for p in (50, 90, 99)}, 1.0)
    k = dq.queues
    tpot = {p: _at(dq.step_ns, q.jsq_seen_quantile(n, k, z_of(p))) * 1e-6 for p in (50, 90, 99)}
    admitted = {p: q.jsq_joined_quantile(n, k, z_of(p)) + 1.0 <= dq.cap for p in (50, 90, 99)}
    mean = _at(dq.step_ns, q.jsq_seen(n, k)) * 1e-6
    return DecodeMetrics(rate_rps, True, n, mean, tpot[50], tpot[90], tpot[99], admitted,
                         n / dq.cap)


def meets_tpot(m: DecodeMetrics, max_tpot_ms: float | None, percentile: int) -> bool:
    """Stable, a slot at the percentile, and TPOT at the percentile within the SLO."""
    return (m.stable and m.admitted_at[percentile]
            and (max_tpot_ms is None or m.tpot_at(percentile) <= max_tpot_ms))


def _start_rps(dq: DecodeQueue) -> float:
    """A rate of the right order: one running request per queue."""
    return dq.queues / (max(1, dq.output_tokens - 1) * dq.step_ns(1) * 1e-9)


def decode_capacity_rps(dq: DecodeQueue) -> float:
    """Highest per-replica rate with a steady state below the cap."""
    return largest_rate(lambda r: steady_running(dq, r) is not None, _start_rps(dq))


def decode_goodput_rps(dq: DecodeQueue, max_tpot_ms: float | None, percentile: int) -> float:
    """Highest per-replica rate at which the percentile's TPOT meets the SLO and finds a slot."""
    return largest_rate(lambda r: meets_tpot(predict_decode(dq, r), max_tpot_ms, percentile),
                        _start_rps(dq))


def decode_rate_bound(step_ns: DecodeStep, queues: int, output_tokens: int, cap: int,
                      max_tpot_ms: float | None) -> float:
    """An upper bound on the rate any queue model of these decode steps sustains with a mean
    TPOT within ``max_tpot_ms`` (aggregated or decode pool): a queue's rate is
    n / ((D - 1) TPOT) with n < B its mean running requests and TPOT >= step(floor(n)) (a
    request's step holds at least n decodes, itself included, and steps only grow with
    decodes); TPOT <= the SLO caps n below M = min(B, N + 1), N the most decodes whose step
    fits the SLO. Split at M / 2: rate <= k max((M / 2) / step(1), M / step(floor(M / 2))) / (D - 1)."""
    most = cap
    if max_tpot_ms is not None:
        limit_ns = max_tpot_ms * 1e6
        if step_ns(1) > limit_ns:
            return 0.0
        low, high = 1, cap  # largest N in [1, cap] with step(N) <= limit (step non-decreasing)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if step_ns(mid) <= limit_ns else (low, mid - 1)
        most = min(cap, low + 1)
    half = max(1, most // 2)
    per_step = max(most / 2.0 / step_ns(1), most / step_ns(half))
    return queues * per_step * 1e9 / max(1, output_tokens - 1)
