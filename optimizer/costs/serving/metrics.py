"""Predicted service metrics of one configuration and knob tuple at one request rate.

Input: ``step_ns(knobs, chunk_tokens, decodes, context_tokens)``, the time of one engine
step of one queue (an attention-DP rank with its own scheduler) that prefills ``chunk_tokens``
prompt tokens and advances ``decodes`` running requests at ``context_tokens`` each, pipelined
as the knobs' micro-batch counts say (integer ns: ``optimizer.costs.step_time`` through
``serving.replica``, or a test double), the number of queues and the GPUs.

Steady state at a rate lambda per queue, prompts of s tokens, outputs of D tokens, a step
budget of C tokens of which the n running decodes take one each:
    n = lambda D TPOT                                  (Little's law, running decodes)
    full = step(C - n, n)                              (a prompt's step: it sees the n
                                                        running decodes, arrivals see time
                                                        averages)
    S = s / (C - n) * full                             (prefill service time of one prompt)
    rho = lambda S                                     (prefill server utilisation)
    TPOT = rho step(C - n', n') + (1 - rho) step(0, n') (mean step while a request decodes:
                                                        it sees the n' = max(1, n) running
                                                        ones, itself among them; least-loaded
                                                        routing keeps the replicas' counts
                                                        even)
with step() at a fractional count linear between the integers around it.
solved by fixed-point iteration from n = 0 (every map is non-decreasing in n, so the iterates
increase to the least fixed point, or pass B or rho = 1: then the rate is not sustainable).
    TTFT = W + (1 - e^-n) TPOT / 2                     (queue wait, rest of the step under way
           + max(1, s / (C - n)) full                   if any decode runs, the prompt's own
                                                        steps: it shares its first and last
                                                        with neighbours)
with W the wait of the deployment's prefill servers as one M/G/k queue (k = queues: requests
go to the least-loaded replica, as the simulator and engines' routers send them; Allen-Cunneen
with the prompt lengths' squared coefficient of variation cv^2, 0 = fixed prompts; for k = 1
the Pollaczek-Khinchine M/G/1 wait); percentiles of W by the exponential tail of
``queueing.wait_quantile_s`` with the Erlang-C probability of waiting. TPOT percentiles are the mean
(each request averages D steps). E2E = TTFT + (D - 1) TPOT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving.knobs import ServingKnobs

StepNs = Callable[[ServingKnobs, int, int, int], int]  # (knobs, chunk, decodes, context) -> ns
PERCENTILES = (50, 90, 99)
_RELATIVE_TOLERANCE = 1e-7  # bisection stops when the bracket is this narrow, relatively
_FIXED_POINT_STEPS = 500


@dataclass(frozen=True)
class ServiceLoad:
    """Request sizes: prompt and output tokens (means) and the prompt lengths' squared
    coefficient of variation (0 = every prompt the same length)."""

    prompt_tokens: int
    output_tokens: int
    prompt_cv2: float = 0.0

    @property
    def decode_context_tokens(self) -> int:
        """Mean context of a decode step: s + (D + 1) / 2, rounded down."""
        return self.prompt_tokens + (self.output_tokens + 1) // 2


@dataclass(frozen=True)
class Slo:
    """Service-level objectives, judged at ``percentile`` (a missing one is not enforced)."""

    max_ttft_s: float | None = None
    max_tpot_ms: float | None = None
    max_e2e_latency_s: float | None = None
    percentile: int = 90


@dataclass(frozen=True)
class Replica:
    """What the serving model needs of one configuration."""

    step_ns: StepNs
    queues: int  # independent schedulers sharing the arrivals evenly
    gpus: int


@dataclass(frozen=True)
class ServiceMetrics:
    """Predicted metrics at one deployment rate (seconds, ms, per second)."""

    rate_rps: float
    stable: bool
    utilization: float  # max(prefill server utilisation, running decodes / B)
    running_requests: float  # mean running decodes per queue
    step_full_ns: int  # a prompt's step (chunk + n decodes), rounded up
    step_decode_ns: int  # a step without prefill (max(1, n) decodes), rounded up
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    tpot_ms: float  # mean = every percentile (see module doc)
    e2e_p90_s: float
    output_tokens_per_s_per_gpu: float

    def ttft_at(self, percentile: int) -> float:
        return {50: self.ttft_p50_s, 90: self.ttft_p90_s, 99: self.ttft_p99_s}[percentile]

    @property
    def tokens_per_s_per_user(self) -> float:
        return 1000.0 / self.tpot_ms if self.tpot_ms > 0 else math.inf


@dataclass(frozen=True)
class _Steady:
    running: float
    rho: float
    full_ns: float  # a step with a prompt chunk and the n decodes a prompt sees
    decode_ns: float  # a step without prompt and the max(1, n) decodes a decoding request sees
    tpot_s: float
    chunk_tokens: float  # prompt tokens of a full step, C - n


def _at(step: Callable[[int], int], count: float) -> float:
    """step(count) for a fractional count: linear between the integers around it."""
    low = math.floor(count)
    frac = count - low
    base = step(low)
    return base if frac <= 1e-12 else base + frac * (step(low + 1) - base)


def _steady_state(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate: float) -> _Steady | None:
    """Fixed point of the steady state at ``rate`` per queue; None if not sustainable."""
    cap, budget, ctx = knobs.max_running_requests, knobs.prefill_chunk_tokens, load.decode_context_tokens
    full = lambda k: rep.step_ns(knobs, budget - k, k, ctx)
    idle = lambda k: rep.step_ns(knobs, 0, k, ctx)
    running = 0.0
    for _ in range(_FIXED_POINT_STEPS):
        if running + 1.0 >= budget:
            return None  # the decodes fill the step: no prompt is ever prefilled
        chunk = budget - running
        full_p = _at(full, running)  # a prompt's step: the n running decodes (PASTA)
        rho = rate * load.prompt_tokens / chunk * full_p * 1e-9
        if rho >= 1.0:
            return None
        # a decoding request sees the n running ones, itself among them (at least one)
        seen = max(1.0, running)
        full_d, idle_d = _at(full, seen), _at(idle, seen)
        tpot_s = (rho * full_d + (1.0 - rho) * idle_d) * 1e-9
        nxt = q.littles_law_count(rate, load.output_tokens * tpot_s)
        if nxt > cap:
            return None
        if nxt - running <= 1e-9 * max(1.0, nxt):
            return _Steady(nxt, rho, full_p, idle_d, tpot_s, chunk)
        running = nxt
    return None  # no convergence: treated as not sustainable


def predict(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float) -> ServiceMetrics:
    """Metrics of the deployment at ``rate_rps`` requests per second (routed to the
    least-loaded queue); an unsustainable rate gives infinite latencies and ``stable=False``."""
    per_queue = rate_rps / rep.queues
    st = _steady_state(rep, knobs, load, per_queue)
    tokens_per_gpu = rate_rps * load.output_tokens / rep.gpus
    if st is None:
        inf = math.inf
        return ServiceMetrics(rate_rps, False, 1.0, float(knobs.max_running_requests), 0, 0,
                              inf, inf, inf, inf, inf, inf, tokens_per_gpu)
    service_s = load.prompt_tokens / st.chunk_tokens * st.full_ns * 1e-9
    wait_s, p_wait = q.mgk_mean_wait_s(rate_rps, service_s, load.prompt_cv2, rep.queues)
    own_s = max(1.0, load.prompt_tokens / st.chunk_tokens) * st.full_ns * 1e-9
    fixed_s = (1.0 - math.exp(-st.running)) * st.tpot_s / 2.0 + own_s
    ttft = {p: q.wait_quantile_s(wait_s, p_wait, p / 100) + fixed_s for p in PERCENTILES}
    tpot_ms = st.tpot_s * 1e3
    return ServiceMetrics(
        rate_rps, True, max(st.rho, st.running / knobs.max_running_requests), st.running,
        math.ceil(st.full_ns), math.ceil(st.decode_ns), wait_s + fixed_s, ttft[50], ttft[90], ttft[99], tpot_ms,
        ttft[90] + max(0, load.output_tokens - 1) * st.tpot_s, tokens_per_gpu)


def meets(m: ServiceMetrics, slo: Slo, load: ServiceLoad) -> bool:
    """Whether every SLO holds at its percentile."""
    if not m.stable:
        return False
    ttft = m.ttft_at(slo.percentile)
    e2e = ttft + max(0, load.output_tokens - 1) * m.tpot_ms / 1e3
    return ((slo.max_ttft_s is None or ttft <= slo.max_ttft_s)
            and (slo.max_tpot_ms is None or m.tpot_ms <= slo.max_tpot_ms)
            and (slo.max_e2e_latency_s is None or e2e <= slo.max_e2e_latency_s))


def _largest_rate(ok: Callable[[float], bool], start_rps: float) -> float:
    """Largest rate with ok(rate), for ok true on [0, r*) and false above (monotone): doubling
    from ``start_rps`` until false, then bisection until the bracket is narrower than
    ``_RELATIVE_TOLERANCE`` of it (the lower end is returned); 0 if ok(start / 2^40) is false."""
    low, high = 0.0, start_rps
    while ok(high):
        low, high = high, 2.0 * high
        if high > 1e12:
            return low
    if low == 0.0 and not ok(start_rps * 2.0**-40):
        return 0.0
    while high - low > _RELATIVE_TOLERANCE * high:
        mid = (low + high) / 2.0
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low


def _start_rps(rep: Replica, knobs: ServingKnobs, load: ServiceLoad) -> float:
    """A rate of the right order: the prefill capacity without decodes."""
    chunk = knobs.prefill_chunk_tokens
    full = rep.step_ns(knobs, chunk, 0, load.decode_context_tokens)
    return rep.queues * chunk / (load.prompt_tokens * full * 1e-9)


def sustainable_rps(rep: Replica, knobs: ServingKnobs, load: ServiceLoad) -> float:
    """Highest deployment rate with a steady state (prefill utilisation < 1, running
    decodes <= B), by bisection (stability is monotone in the rate)."""
    return _largest_rate(lambda r: _steady_state(rep, knobs, load, r / rep.queues) is not None,
                         _start_rps(rep, knobs, load))


def goodput_rps(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, slo: Slo) -> float:
    """DistServe's goodput: the highest deployment rate at which the SLO percentile of
    requests meets every SLO; by bisection (every predicted latency is non-decreasing in
    the rate, so meeting the SLOs is monotone)."""
    return _largest_rate(lambda r: meets(predict(rep, knobs, load, r), slo, load),
                         _start_rps(rep, knobs, load))
