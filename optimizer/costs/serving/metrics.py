"""Predicted service metrics of one configuration and knob tuple at one request rate.

Input: ``step_ns(knobs, chunk_tokens, decodes, context_tokens)``, the time of one engine
step of one queue (an attention-DP rank with its own scheduler) that prefills ``chunk_tokens``
prompt tokens and advances ``decodes`` running requests at ``context_tokens`` each, pipelined
as the knobs' micro-batch counts say (integer ns: ``optimizer.costs.step_time`` through
``serving.replica``, or a test double), the number of queues and the GPUs.

Steady state at a rate lambda per queue (k queues, requests routed to the least-loaded one),
prompts of s tokens, outputs of D tokens, a step budget of C tokens (docs/serving-model.md):
    n = lambda (D - 1) TPOT                            (Little's law, running decodes per queue)
    n_a = n (k = 1); for k > 1 the router counts the OUTSTANDING requests, a = n + p per queue,
    p = rho + lambda W prompts prefilling or waiting: n_a = min(n, E[min] n / (n + lambda W))
                                                       (``queueing.jsq_outstanding``: mean-field
                                                        least-loaded routing; the joined queue's
                                                        requests decode in its first step, less
                                                        those that finish during a wait W)
    x = C - n_a if s >= C - n_a, else min(C - n_a, m s)  (prompt tokens of a prompt step, m the
                                                        prompts per prompt step of the gated
                                                        step chain: ``decode_life``)
    full = step(x, n_a), K = s / x                     (a prompt step and the steps per prompt;
                                                        in f, on one queue with prompts longer
                                                        than the room, K = whole steps over the
                                                        prompt lengths: ``steps_per_prompt``)
    rho = lambda K full                                (prefill server utilisation)
    f = (K n_a + E[e(L)]) / (D - 1)                    (share of a decode's steps that carry a
                                                        prompt chunk: lambda K n_a pairs per
                                                        second against lambda (D - 1) decode
                                                        steps, and e(L) more right after its own
                                                        prompt's step, short prompts: on k > 1
                                                        queues its chain from the refill,
                                                        ``routing.routed_excess``)
    n' = 1 + n + lambda (s / x full - K TPOT) for k = 1 (the arrivals during its prompt's own
                                                        steps start with it, beyond the even
                                                        spread's), else 1 + (c' - 1) n / a
                                                        (what a decoding request sees, itself
                                                        included: c' its queue's outstanding
                                                        count, E[c^2] / E[c] = 1 + E[min])
    TPOT = step(0, n') + f (step(x, n') - step(0, n'))
with step() at a fractional count linear between the integers around it (``queueing.jsq_*``
give n_a, n', P(N >= k)); solved by fixed-point iteration from n = 0 (the iterates climb to
the least fixed point, or pass B (n + rho > B) or rho = 1: then the rate is not sustainable).
    TTFT = W + W_r + (P(N >= k) step(0, n_a) / 2 unless in W) + own(s)
                                                       (queue waits, rest of the step under way
                                                        if the joined replica decodes, the
                                                        prompt's own steps)
with own(s) step by step: the others of its step, x' - s tokens with x' = min(C - n_a,
s (1 + lambda t)) (those that arrived during the step under way, t: ``_prompt_step_tokens``),
half ahead of it and half behind (FCFS); the tokens ahead and its own fill
floor(. / (C - n_a)) full steps and its last step holds the rest and those behind; a step's
first chunk is the prompt's own (``Replica.lead_step_ns``: its attention at its length, and
in a pipeline the largest micro-batch, which sets the step). W: for prompts longer than half
the room, the wait of the deployment's prefill servers as one M/G/k queue (Allen-Cunneen with
the prompt lengths' squared coefficient of variation cv^2; Pollaczek-Khinchine for k = 1);
for shorter ones (gated admission) the rest of the step under way: with k = 1 a prompt step
(a share rho of the time, length-biased over the steps' prompt tokens min(C - n_a, A), A the
compound Poisson tokens that came during the step before: ``prefill_backlog``) or a decode
step (a share (1 - rho) P(N >= 1)), the rest uniform, plus the prompt tokens earlier steps
left over their room, L / (C - n_a) full steps (Lindley's recursion, Cramer-Lundberg tail:
``prefill_backlog``); with k > 1 none. W_r the wait behind a prompt the joined replica still
prefills (least-loaded routing counts requests, not prefills: ``queueing.refill_*``, k > 1
only).
Percentiles: P(W + own(s) > t) = 1 - q averaged over the equally likely prompt lengths
(``ServiceLoad.prompt_points``; else the prompt at that percentile of the lengths), W's tail
as above (the exponential tail for M/G/k), plus W_r's quantile, at n_a's normal quantile.
TPOT percentiles: the mean plus the root sum of squares of
the spread of the count a request sees over its life and of the prompt steps in its life
(``decode_life``: Poisson over a life of L = D' - 1 steps, L over the output lengths;
``_tpot_quantile_s``); on one queue instead the life's decode time as shot noise (prompts
arriving in it bring their steps and a decode; the life's length feeds back:
``decode_life.one_queue_tpot_quantile_s``). E2E = TTFT + (D - 1) TPOT, both at the percentile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving import routing
from optimizer.costs.serving.decode_life import (
    excess_prompt_steps,
    one_queue_tpot_quantile_s,
    prompts_per_prompt_step,
    share_quantile,
    steps_per_prompt,
)
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.prefill_backlog import leftover_steps, step_tokens_law

StepNs = Callable[[ServingKnobs, int, int, int], int]  # (knobs, chunk, decodes, context) -> ns
# (knobs, prompt, chunk, decodes, context) -> ns: a step whose first chunk is of a ``prompt``-token prompt
LeadStepNs = Callable[[ServingKnobs, int, int, int, int], int]
PERCENTILES = (50, 90, 99)
_RELATIVE_TOLERANCE = 1e-7  # bisection stops when the bracket is this narrow, relatively
_FIXED_POINT_STEPS = 500
DECODE_VIEW_PARTS = 32  # the decodes' view of a prompt step: prompts rounded up to 1/32 of one
_STEP_GRID = 8  # a prompt's last step is costed linear between multiples of C / 8 tokens


@dataclass(frozen=True)
class ServiceLoad:
    """Request sizes: prompt and output tokens (means), the prompt lengths' squared
    coefficient of variation (0 = every prompt the same length) and their percentiles
    (``PERCENTILES``; empty = every prompt ``prompt_tokens`` long)."""

    prompt_tokens: int
    output_tokens: int
    prompt_cv2: float = 0.0
    prompt_percentile_tokens: tuple[int, ...] = ()
    output_points: tuple[int, ...] = ()  # equally likely output lengths (empty: all D)
    prompt_points: tuple[int, ...] = ()  # equally likely prompt lengths (empty: all s)

    def decode_lives(self) -> np.ndarray:
        """The decode steps L = D' - 1 of equally likely requests that decode (D' > 1)."""
        lives = [d - 1 for d in (self.output_points or (self.output_tokens,)) if d > 1]
        return np.array(lives or [max(0, self.output_tokens - 1)], dtype=float)

    def prompt_lengths(self) -> np.ndarray:
        """Equally likely prompt lengths, tokens (``prompt_points``, or s alone)."""
        return np.array(self.prompt_points or (self.prompt_tokens,), dtype=float)

    def prompt_at(self, percentile: int) -> int:
        """The prompt length at ``percentile`` (one of ``PERCENTILES``), tokens."""
        if not self.prompt_percentile_tokens:
            return self.prompt_tokens
        return self.prompt_percentile_tokens[PERCENTILES.index(percentile)]

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
    lead_step_ns: LeadStepNs | None = None  # None: the first chunk is a mean prompt's (step_ns)


@dataclass(frozen=True)
class ServiceMetrics:
    """Predicted metrics at one deployment rate (seconds, ms, per second)."""

    rate_rps: float
    stable: bool
    utilization: float  # max(prefill server utilisation, running decodes / B)
    running_requests: float  # mean running decodes per queue
    step_full_ns: int  # a prompt's step (chunk + the decodes of the replica it joins), rounded up
    step_decode_ns: int  # a step without prefill (the decodes a decoding request sees), rounded up
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    tpot_ms: float  # mean over requests
    e2e_p90_s: float
    output_tokens_per_s_per_gpu: float
    tpot_p50_ms: float = math.inf
    tpot_p90_ms: float = math.inf
    tpot_p99_ms: float = math.inf

    def ttft_at(self, percentile: int) -> float:
        return {50: self.ttft_p50_s, 90: self.ttft_p90_s, 99: self.ttft_p99_s}[percentile]

    def tpot_at(self, percentile: int) -> float:
        return {50: self.tpot_p50_ms, 90: self.tpot_p90_ms, 99: self.tpot_p99_ms}[percentile]

    @property
    def tokens_per_s_per_user(self) -> float:
        return 1000.0 / self.tpot_ms if self.tpot_ms > 0 else math.inf


@dataclass(frozen=True)
class _Steady:
    running: float  # n, mean running decodes per queue
    joined: float  # n_a, mean decodes of the replica a new prompt joins
    rho: float  # prefill server utilisation of one queue
    shared: float  # f, fraction of a decode's steps that carry a prompt chunk
    seen: float  # mean decodes of a decoding request's step, itself included
    full_ns: float  # a prompt's step: C - n_a prompt tokens and n_a decodes
    decode_ns: float  # a step without prompt and ``seen`` decodes
    with_prompt_ns: float  # a step with a prompt chunk and ``seen`` decodes
    tpot_s: float
    chunk_tokens: float  # prompt tokens of a prompt's step, C - n_a
    excess: tuple[float, ...] = ()  # e(L) per ``ServiceLoad.decode_lives`` (``decode_life``)
    prompt_steps: float = 1.0  # K, a prompt's steps as the decodes see them (f = K n_a / (D - 1))
    early: float = 0.0  # decodes that start with a request's (one queue: ``_steady_state``)
    prompts: float = 0.0  # p, prompts outstanding per queue (waiting or prefilling; k > 1 only)


def _at(step: Callable[[int], int], count: float) -> float:
    """step(count) for a fractional count: linear between the integers around it."""
    low = math.floor(count)
    frac = count - low
    base = step(low)
    return base if frac <= 1e-12 else base + frac * (step(low + 1) - base)


def _eighths(prompt_tokens: int, prompts: float, parts: int = 8) -> int:
    """Tokens of ``prompts`` prompts rounded up to 1 / ``parts`` of one (few distinct steps)."""
    return math.ceil(prompt_tokens * math.ceil(parts * prompts - 1e-9) / parts)


def _prompt_step_tokens(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate: float, joined: float) -> int:
    """x: prompt tokens of a step that carries prefill, beside ``joined`` decodes (the caller
    caps it at C - k for k decodes). A prompt longer than the budget fills it (C); a shorter
    one shares its step with the prompts that arrived during the step under way
    (length-biased: lambda t of them, t the step under way, the prompt step itself in a run
    of them with probability rho), rounded up to eighths of a prompt:
    x = min(C - n_a, s ceil(8 (1 + lambda t)) / 8); one refinement from t = step(0, n_a)."""
    budget, ctx, s = knobs.prefill_chunk_tokens, load.decode_context_tokens, load.prompt_tokens
    room = max(1, math.floor(budget - joined))
    if s >= room:
        return budget  # the step holds C - k prompt tokens beside k decodes
    def step(tokens, k):
        return rep.step_ns(knobs, tokens, k, ctx)
    idle_ns = _at(lambda k: step(0, k), joined)
    x = min(room, _eighths(s, 1.0 + rate * idle_ns * 1e-9))
    full_ns = _at(lambda k: step(x, k), joined)
    rho = min(1.0, rate * s / x * full_ns * 1e-9)
    under_way_ns = rho * full_ns + (1.0 - rho) * idle_ns
    return min(room, _eighths(s, 1.0 + rate * under_way_ns * 1e-9))


def _prompts_waiting(rep: Replica, load: ServiceLoad, rate: float, prefill_s: float, gated: bool) -> float:
    """Prompts waiting per queue (not yet in a step), lambda W by Little's law; W the
    deployment's prefill servers as one M/G/k queue for prompts longer than half the room
    (gated shorter ones wait at most the rest of one step: left out); inf past capacity."""
    if gated:
        return 0.0
    return q.littles_law_count(rate, q.mgk_mean_wait_s(rate * rep.queues, prefill_s, load.prompt_cv2, rep.queues)[0])


def _routed_at(st: _Steady, replicas: int, z: float, variance_share: float) -> tuple[float, float, float]:
    """``routing.routed_at`` of a steady state (its waiting prompts: p - rho)."""
    return routing.routed_at(st.running, st.rho, st.prompts - st.rho, replicas, z, variance_share)


def _steady_state(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate: float) -> _Steady | None:
    """Fixed point of the steady state at ``rate`` per queue (module doc); None if not
    sustainable."""
    cap, budget, ctx = knobs.max_running_requests, knobs.prefill_chunk_tokens, load.decode_context_tokens
    def idle(k):
        return rep.step_ns(knobs, 0, k, ctx)
    decode_steps = max(0, load.output_tokens - 1)
    lives = load.decode_lives()
    running, own_prefill_s = 0.0, 0.0
    prompts = waiting = 0.0
    last_prompts = -1.0
    for _ in range(_FIXED_POINT_STEPS):
        if running + 1.0 >= budget:
            return None  # the decodes fill the step: no prompt is ever prefilled
        if rep.queues == 1:
            joined, seen = q.jsq_joined(running, 1), q.jsq_seen(running, 1)
            if decode_steps:  # those arriving during a prompt's own steps decode its whole life
                seen += rate * own_prefill_s
        else:  # the router counts the prompts too (``routing.routed``)
            joined, seen, busy_k = routing.routed(running, prompts - waiting, waiting, rep.queues)
        idle_d = _at(idle, seen)
        room = budget - joined
        if load.prompt_tokens >= room:
            tokens = budget  # the step holds C - k prompt tokens beside k decodes
        else:  # the prompts of a prompt step as the steps hold them (``decode_life``)
            def prompt_step_s(m, joined=joined, room=room):
                x = min(math.floor(room), _eighths(load.prompt_tokens, m, DECODE_VIEW_PARTS))
                return _at(lambda k: rep.step_ns(knobs, min(x, math.floor(budget - k)), k, ctx), joined) * 1e-9
            busy = q.jsq_busy_share(running, 1) if rep.queues == 1 else busy_k
            m = prompts_per_prompt_step(rate, idle_d * 1e-9, busy, prompt_step_s)
            tokens = min(math.floor(room), _eighths(load.prompt_tokens, m, DECODE_VIEW_PARTS))
        def full(k, tokens=tokens):
            return rep.step_ns(knobs, min(tokens, budget - k), k, ctx)
        chunk = min(float(tokens), budget - joined)
        share = load.prompt_tokens / chunk  # prompt steps per prompt, fractional (prefill time)
        full_p = _at(full, joined)
        rho = min(1.0, rate * share * full_p * 1e-9)
        if load.prompt_tokens >= room and rep.queues == 1:  # the decodes' view: whole steps per prompt, each
            # holding s / K tokens on average (``decode_life.steps_per_prompt``)
            share = float(steps_per_prompt(load.prompt_lengths(), room, rho).mean())
            held = max(1, round(load.prompt_tokens / share))
            def full(k, tokens=held):
                return rep.step_ns(knobs, min(tokens, budget - k), k, ctx)
        full_d = _at(full, min(seen, budget - 1.0))
        # prompt steps right after a decode's own (short prompts: ``decode_life``; k > 1:
        # ``routing.routed_excess``)
        if load.prompt_tokens >= budget - joined:
            excess = np.zeros(len(lives))
        elif rep.queues == 1:
            excess = excess_prompt_steps(rate, full_p * 1e-9, idle_d * 1e-9, lives)
        else:
            excess = routing.routed_excess(rate, rep.queues, full_p * 1e-9, joined, running,
                                           share * joined / decode_steps if decode_steps else 0.0, lives)
        shared = min(1.0, (share * joined + float(excess.mean())) / decode_steps) if decode_steps else 0.0
        tpot_s = (idle_d + shared * (full_d - idle_d)) * 1e-9
        nxt = q.littles_law_count(rate, decode_steps * tpot_s)
        if rep.queues > 1:  # the prompts the router counts (``routing.routed``)
            waiting = _prompts_waiting(rep, load, rate, share * full_p * 1e-9, gated=load.prompt_tokens * 2 <= room)
            if math.isinf(waiting):
                return None  # the prefill servers cannot keep up
            prompts = rho + waiting
        if nxt + rho > cap:
            return None  # the running decodes plus the prompt being prefilled pass B
        if nxt - running <= 1e-9 * max(1.0, nxt) and prompts - last_prompts <= 1e-9 * max(1.0, prompts):
            # the prefill must keep up with full chunks (checked at the limit only: the test
            # is non-decreasing in n_a, and the iterates increase)
            def widest(k):  # a step whose prompt chunk fills the budget
                return rep.step_ns(knobs, budget - k, k, ctx)
            if rate * load.prompt_tokens / (budget - joined) * _at(widest, joined) * 1e-9 >= 1.0:
                return None
            return _Steady(nxt, joined, rho, shared, seen, full_p, idle_d, full_d, tpot_s, chunk,
                           tuple(float(e) for e in excess), share,
                           rate * own_prefill_s if rep.queues == 1 and decode_steps else 0.0,
                           prompts if rep.queues > 1 else 0.0)
        # the arrivals during a prompt's own steps beyond the even spread's K TPOT (one queue;
        # from the previous iterate: the same at the fixed point)
        running, last_prompts = nxt, prompts
        own_prefill_s = max(0.0, load.prompt_tokens / chunk * full_p * 1e-9 - share * tpot_s)
    return None  # no convergence: treated as not sustainable


def _tpot_quantile_s(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, st: _Steady, percentile: int) -> float:
    """TPOT of the request at ``percentile``: the mean plus the root sum of squares of two
    independent spreads, the decodes its replica holds over its life
    (``queueing.jsq_seen`` at the lifetime-averaged count's normal quantile) and the prompt
    steps in its life (``decode_life.share_quantile`` over the output lengths: a life of L
    steps holds f0 L + e(L) on average, f0 = K n_a / (D - 1), K = s / (C - n_a) steps per
    prompt), less the mean share, times what a prompt chunk adds to a step (a share below
    the mean lowers it). The median is taken at the mean."""
    z = _z(percentile)
    if load.output_tokens <= 1 or z <= 0.0:
        return st.tpot_s  # the median is taken at the mean
    ctx = load.decode_context_tokens
    def idle(k):
        return rep.step_ns(knobs, 0, k, ctx)
    if rep.queues == 1:
        return _one_queue_tpot_quantile_s(load, st, idle, knobs.prefill_chunk_tokens, percentile)
    seen_q = _routed_at(st, rep.queues, z, 2.0 / 3.0)[1]
    by_count = (_at(idle, seen_q) - st.decode_ns) * (1.0 - st.shared)
    lives = load.decode_lives()
    steps = load.prompt_tokens / st.chunk_tokens
    mean_steps = steps * st.joined / (load.output_tokens - 1) * lives + np.array(st.excess)
    share = share_quantile(lives, mean_steps, max(1.0, steps), percentile / 100)
    by_prompts = (share - st.shared) * (st.with_prompt_ns - st.decode_ns)
    return st.tpot_s + (math.hypot(by_count, max(0.0, by_prompts)) + min(0.0, by_prompts)) * 1e-9


def _one_queue_tpot_quantile_s(load: ServiceLoad, st: _Steady, idle: Callable[[int], int], budget: int,
                               percentile: int) -> float:
    """TPOT at ``percentile`` on one queue: ``decode_life.one_queue_tpot_quantile_s`` with the
    steady state's figures (lambda = n / ((D - 1) TPOT), b = the slope of step(0, .) over n' +- sqrt(n'),
    Delta = what a prompt step adds to a decode step; K over the prompt lengths for prompts
    longer than the room, else a prompt's share of the step it shares)."""
    lives = load.decode_lives()
    rate = st.running / ((load.output_tokens - 1) * st.tpot_s)
    spread = max(1.0, math.sqrt(st.seen))  # b as a secant over the count's Poisson sd
    low = max(1.0, st.seen - spread)
    per_decode_s = (_at(idle, st.seen + spread) - _at(idle, low)) / (st.seen + spread - low) * 1e-9
    if load.prompt_tokens >= budget - st.joined:
        steps = steps_per_prompt(load.prompt_lengths(), budget - st.joined, st.rho)
    else:  # a prompt's share of a step it shares with 1 / K - 1 others
        steps = np.array([st.prompt_steps])
    mean_steps = st.prompt_steps * st.joined / (load.output_tokens - 1) * lives + np.array(st.excess)
    return one_queue_tpot_quantile_s(lives, st.tpot_s, rate, st.running, (st.with_prompt_ns - st.decode_ns) * 1e-9,
                                     per_decode_s, steps, mean_steps, percentile / 100, st.early)


def predict(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float,
            with_ttft: bool = True) -> ServiceMetrics:
    """Metrics of the deployment at ``rate_rps`` requests per second (routed to the
    least-loaded queue); an unsustainable rate gives infinite latencies and ``stable=False``.
    ``with_ttft=False`` leaves the TTFT figures (and the E2E) NaN, for a caller that replaces
    them (the disaggregated prefill pool's law): they cost most of a prediction."""
    per_queue = rate_rps / rep.queues
    st = _steady_state(rep, knobs, load, per_queue)
    tokens_per_gpu = rate_rps * load.output_tokens / rep.gpus
    if st is None:
        inf = math.inf
        return ServiceMetrics(rate_rps, False, 1.0, float(knobs.max_running_requests), 0, 0,
                              inf, inf, inf, inf, inf, inf, tokens_per_gpu)
    if not with_ttft:
        nan = math.nan
        tpot = {p: _tpot_quantile_s(rep, knobs, load, st, p) * 1e3 for p in PERCENTILES}
        return ServiceMetrics(
            rate_rps, True, max(st.rho, st.running / knobs.max_running_requests), st.running,
            math.ceil(st.full_ns), math.ceil(st.decode_ns), nan, nan, nan, nan, st.tpot_s * 1e3, nan,
            tokens_per_gpu, tpot[50], tpot[90], tpot[99])
    budget, ctx = knobs.prefill_chunk_tokens, load.decode_context_tokens
    def idle(k):
        return rep.step_ns(knobs, 0, k, ctx)
    mean_prompts = load.prompt_points or (load.prompt_tokens,)
    service_s = load.prompt_tokens / st.chunk_tokens * st.full_ns * 1e-9
    # a prompt at most half the room is admitted at the end of the step under way with every
    # prompt that came during it (gated: no queue of prompts), so it waits at most the rest of
    # one prompt step (one queue: under way a share rho of the time, the rest uniform);
    # a longer one queues as at the deployment's prefill servers, one M/G/k queue
    gated = 2 * load.prompt_tokens <= budget - st.joined
    if gated:
        service_s = st.full_ns * 1e-9
    wait_s, p_wait = (0.0, 0.0) if gated else q.mgk_mean_wait_s(rate_rps, service_s, load.prompt_cv2, rep.queues)
    under_way = gated and rep.queues == 1
    # P(the joined replica runs a step): it holds a decode (one queue) or any request (k > 1)
    busy = q.jsq_joined_busy(st.running, 1) if rep.queues == 1 else \
        q.jsq_outstanding(st.running + st.prompts, rep.queues)[1]
    # one queue, gated: the step under way is a prompt step (a share rho of the time) or a
    # decode step (a share (1 - rho) P(N >= 1)); the rest of either is uniform
    idle_s = _at(idle, max(1.0, st.joined)) * 1e-9
    decode_share = (1.0 - st.rho) * busy if under_way else 0.0
    step_s, step_p = np.array([service_s]), np.ones(1)  # the prompt steps' law (s, probability)
    if under_way:  # length-biased: P(rest > t | a prompt step) = E[(T - t)^+] / E[T]
        room = budget - st.joined
        under_way_s = st.rho * service_s + (1.0 - st.rho) * idle_s
        tokens, step_p = step_tokens_law(load.prompt_points or (load.prompt_tokens,), per_queue * under_way_s, room)
        grid = np.linspace(0.0, room, 9)
        costs = [_at(lambda k, x=x: rep.step_ns(knobs, math.floor(min(x, budget - k)), k, ctx), st.joined) * 1e-9
                 for x in grid]
        step_s = np.interp(tokens, grid, costs)
        wait_s = st.rho * float(step_s**2 @ step_p) / (2.0 * float(step_s @ step_p)) + decode_share * idle_s / 2.0
    # behind a prompt of the joined replica (least-loaded routing counts requests, not prefills)
    # the joined replica falls back to the least-loaded count as its n_a decodes finish
    # (rate n_a / life, life = (D - 1) TPOT); the next arrival then joins it (queueing.refill_*)
    # one queue, gated: the prompt tokens a step leaves over its room wait whole steps more
    # (``prefill_backlog``: Lindley's recursion over the steps, full steps while it lasts)
    backlog_steps, backlog_p, backlog_step_s = np.zeros(1), np.ones(1), 0.0
    if under_way:
        backlog_step_s = _at(lambda k: rep.step_ns(knobs, budget - k, k, ctx), st.joined) * 1e-9
        backlog_steps, backlog_p = leftover_steps(mean_prompts, per_queue * backlog_step_s,
                                                  budget - st.joined)
    backlog_s = backlog_steps * backlog_step_s
    life_s = max(0, load.output_tokens - 1) * st.tpot_s
    freed = st.joined / life_s if rep.queues > 1 and life_s > 0 else 0.0
    mean_wait_s = wait_s + float(backlog_s @ backlog_p) + q.refill_mean_wait_s(service_s, freed, rate_rps)

    def wait_tail(t: np.ndarray) -> np.ndarray:
        """P(wait > t) for t >= 0 (the tails ``wait_at`` inverts)."""
        if under_way:  # rho (1 - t / S)^+ + share (1 - t / idle)^+
            rest = np.clip(step_s[None, :] - np.asarray(t)[..., None], 0.0, None) @ step_p
            return st.rho * rest / float(step_s @ step_p) + np.clip(decode_share * (1.0 - t / idle_s), 0.0, None)
        if wait_s <= 0.0 or p_wait <= 0.0:
            return np.zeros_like(t)
        return p_wait * np.exp(-p_wait * t / wait_s)

    def wait_at(quantile: float) -> float:
        if under_way:  # the tail is piecewise linear, decreasing: bisection
            if float(wait_tail(np.zeros(1))[0]) <= 1.0 - quantile:
                return 0.0
            low, high = 0.0, max(float(step_s.max()), idle_s)
            for _ in range(60):
                mid = (low + high) / 2.0
                low, high = (mid, high) if float(wait_tail(np.array([mid]))[0]) > 1.0 - quantile else (low, mid)
            return high
        return q.wait_quantile_s(wait_s, p_wait, quantile)

    # without micro-batches the own chunk adds its attention at its own length, which hardly
    # depends on the decodes beside it: costed at the mean joined count rounded to a power of
    # two (few distinct steps are costed); in a pipeline the dealing of the step's items over
    # the micro-batches depends on the decodes: costed at the decodes of the step
    pipelined = rep.lead_step_ns is not None and max(knobs.prefill_micro_batches, knobs.decode_micro_batches) > 1
    lead_ref = 0 if st.joined < 0.5 else min(1 << max(0, round(math.log2(st.joined))), budget - 1)
    extras: dict[tuple[int, int], int] = {}

    def lead_extra(prompt: int, tokens: int) -> int:
        """What a step of ``tokens`` (no pipeline) takes more when its first chunk is the
        prompt's own (``Replica.lead_step_ns``: its attention at its own length) than the
        mean prompt's, at ``lead_ref`` decodes."""
        if rep.lead_step_ns is None:
            return 0
        chunk = max(0, min(tokens, budget - lead_ref))
        key = (prompt, chunk)
        if key not in extras:
            extras[key] = (rep.lead_step_ns(knobs, prompt, chunk, lead_ref, ctx)
                           - rep.step_ns(knobs, chunk, lead_ref, ctx))
        return extras[key]

    def own_s(joined: float, prompts: tuple[int, ...]) -> np.ndarray:
        """The own steps of prompts of ``prompts`` tokens (and the rest of the step under way
        when one arrives, unless it is in the wait): the others of its step (x' - s tokens,
        ``_prompt_step_tokens``; none when prompts fill the room) are half ahead of it and
        half behind (FCFS); the tokens ahead and its own fill floor(. / (C - n_a)) full
        steps, and its last step holds the rest and those behind (linear between multiples
        of C / ``_STEP_GRID`` tokens). A step's first chunk is the prompt's own
        (``Replica.lead_step_ns``: its attention at its length; in a pipeline the first
        micro-batch, the largest, sets the step)."""
        joined = min(joined, budget - 1.0)
        tokens = _prompt_step_tokens(rep, knobs, load, per_queue, joined)
        rest = 0.0 if under_way else busy * _at(idle, max(1.0, joined)) / 2.0  # (in the wait if under way)
        out = []
        others = 0.0 if tokens >= budget else (tokens - load.prompt_tokens) / 2.0  # ahead, and behind
        room = budget - joined
        cell = budget / _STEP_GRID
        def step(tokens: int, prompt: int) -> float:  # beside the joined decodes, its chunk first
            def at(k):
                chunk = max(0, min(tokens, math.floor(budget - k)))
                if pipelined:
                    return rep.lead_step_ns(knobs, prompt, chunk, k, ctx)
                return rep.step_ns(knobs, chunk, k, ctx)
            return _at(at, joined) + (0 if pipelined else lead_extra(prompt, tokens))
        for prompt in prompts:
            ahead = others + prompt  # what must be done before its first token (token FCFS)
            whole = math.floor(ahead / room) if ahead > room else 0
            last = math.ceil(ahead - whole * room + others) if ahead > whole * room else 0  # its last step's tokens
            low = math.floor(last / cell)
            frac = last / cell - low
            last_ns = 0.0
            if last > 0:
                last_ns = step(round(low * cell), prompt)
                if frac > 1e-12:
                    last_ns += frac * (step(round((low + 1) * cell), prompt) - last_ns)
            out.append((whole * step(budget, prompt) + last_ns + rest) * 1e-9)
        return np.array(out)

    def joined_at(z: float) -> float:  # n_a at the quantile z of the deployment's count
        if rep.queues == 1:
            return q.jsq_joined_quantile(st.running, 1, z)
        return st.joined if z <= 0.0 else _routed_at(st, rep.queues, z, 1.0)[0]

    def ttft_at(percentile: int) -> float:
        """The wait plus the own steps at ``percentile``: over the equally likely prompt
        lengths when the load has them (P(wait + own(s) > t) = 1 - q, averaged over s),
        else the prompt at that percentile of the lengths; n_a at its normal quantile."""
        quantile = percentile / 100
        joined = joined_at(_z(percentile))
        refill = q.refill_wait_quantile_s(service_s, freed, rate_rps, quantile)
        owns = own_s(joined, load.prompt_points or (load.prompt_at(percentile),))
        both = (owns[:, None] + backlog_s[None, :]).ravel()
        weights = np.repeat(backlog_p[None, :], len(owns), axis=0).ravel() / len(owns)
        return refill + _mixture_quantile_s(both, weights, wait_tail, wait_at(quantile), quantile)

    ttft = {p: ttft_at(p) for p in PERCENTILES}
    tpot = {p: _tpot_quantile_s(rep, knobs, load, st, p) * 1e3 for p in PERCENTILES}
    steps = max(0, load.output_tokens - 1)
    return ServiceMetrics(
        rate_rps, True, max(st.rho, st.running / knobs.max_running_requests), st.running,
        math.ceil(st.full_ns), math.ceil(st.decode_ns), mean_wait_s + float(own_s(st.joined, mean_prompts).mean()),
        ttft[50], ttft[90],
        ttft[99], st.tpot_s * 1e3, ttft[90] + steps * tpot[90] / 1e3, tokens_per_gpu,
        tpot[50], tpot[90], tpot[99])


def _mixture_quantile_s(owns: np.ndarray, weights: np.ndarray, wait_tail, wait_q_s: float, quantile: float) -> float:
    """The ``quantile`` of wait + own over ``owns`` (s) of probabilities ``weights``: the t
    with sum_i w_i P(wait > t - own_i) = 1 - q (P = 1 below 0), by bisection between the
    smallest own and the largest own plus the wait's own quantile ``wait_q_s``."""
    if len(owns) == 1 or not math.isfinite(wait_q_s) or not np.isfinite(owns).all():
        return float(owns.max()) + wait_q_s
    def tail(t):
        u = t - owns
        return float(np.where(u < 0.0, 1.0, wait_tail(np.maximum(u, 0.0))) @ weights)
    low, high = float(owns.min()), float(owns.max()) + wait_q_s
    while high - low > 1e-6 * high:
        mid = (low + high) / 2.0
        low, high = (mid, high) if tail(mid) > 1.0 - quantile else (low, mid)
    return high


def _z(percentile: int) -> float:
    return NormalDist().inv_cdf(percentile / 100)


def meets(m: ServiceMetrics, slo: Slo, load: ServiceLoad) -> bool:
    """Whether every SLO holds at its percentile."""
    if not m.stable:
        return False
    ttft = m.ttft_at(slo.percentile)
    tpot_ms = m.tpot_at(slo.percentile)
    e2e = ttft + max(0, load.output_tokens - 1) * tpot_ms / 1e3
    return ((slo.max_ttft_s is None or ttft <= slo.max_ttft_s)
            and (slo.max_tpot_ms is None or tpot_ms <= slo.max_tpot_ms)
            and (slo.max_e2e_latency_s is None or e2e <= slo.max_e2e_latency_s))


def largest_rate(ok: Callable[[float], bool], start_rps: float) -> float:
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
    decodes <= B), by bisection (stability is monotone in the rate); memoised (the search
    asks for the widest tuple of a group twice: to prune, then to evaluate)."""
    return _sustainable_rps(rep, knobs, load)


@lru_cache(maxsize=1 << 12)
def _sustainable_rps(rep: Replica, knobs: ServingKnobs, load: ServiceLoad) -> float:
    return largest_rate(lambda r: _steady_state(rep, knobs, load, r / rep.queues) is not None,
                         _start_rps(rep, knobs, load))


def goodput_rps(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, slo: Slo) -> float:
    """DistServe's goodput: the highest deployment rate at which the SLO percentile of
    requests meets every SLO; by bisection (every predicted latency is non-decreasing in
    the rate, so meeting the SLOs is monotone)."""
    return largest_rate(lambda r: meets(predict(rep, knobs, load, r), slo, load),
                         _start_rps(rep, knobs, load))
