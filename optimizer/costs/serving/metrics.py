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
                                                        prompt lengths: ``steps_per_prompt``;
                                                        for shorter prompts step(x, .) is the
                                                        mean over the law of the step's prompts,
                                                        ``prompt_mix``, in full, in the chain's
                                                        p(m) and in TPOT's step(x, n'))
    rho = lambda K full                                (prefill server utilisation)
    f = (K n_a + E[e(L)]) / (D - 1)                    (share of a decode's steps that carry a
                                                        prompt chunk: lambda K n_a pairs per
                                                        second against lambda (D - 1) decode
                                                        steps, and e(L) more right after its own
                                                        prompt's step: on one queue the rest of
                                                        the prefill busy period it was born in,
                                                        ``decode_life.busy_period_excess``; on
                                                        k > 1 queues, short prompts, its chain
                                                        from the refill or a tie at its count,
                                                        ``routing.routed_excess``)
    n' = 1 + n + lambda (s / x full - K TPOT) for k = 1 (the arrivals during its prompt's own
                                                        steps start with it, beyond the even
                                                        spread's), else 1 + (c' + 1 / k - 1) n / a
                                                        (what a decoding request sees, itself
                                                        included: c' its queue's outstanding
                                                        count, E[c^2] / E[c] = 1 + E[min] in
                                                        the mean field, plus 1 / k for the
                                                        deployment's Poisson total moving
                                                        every queue: ``routing.total_seen_excess``)
    TPOT = step(0, n') + f (step(x, n') - step(0, n'))
with step() at a fractional count linear between the integers around it (``queueing.jsq_*``
give n_a, n', P(N >= k)); solved by fixed-point iteration from n = 0 (the iterates climb to
the least fixed point, or pass B (n + rho > B) or rho = 1: then the rate is not sustainable).
    TTFT = W + W_r + (P(N >= k) step(0, n_a) / 2 unless in W) + own(s)
                                                       (queue waits, rest of the step under way
                                                        if the joined replica decodes, the
                                                        prompt's own steps)
with own(s) step by step: the others of its step, x' - s tokens with x' = min(C - n_a,
s (1 + lambda t)) (those that arrived during the step under way, t: ``steady_state.prompt_step_tokens``),
half ahead of it and half behind (FCFS); the tokens ahead and its own fill
floor(. / (C - n_a)) full steps and its last step holds the rest and those behind; a step's
first chunk is the prompt's own (``Replica.lead_step_ns``: its attention at its length, and
in a pipeline the largest micro-batch, which sets the step); gated prompts also have the
prompt tokens earlier steps left over ahead of them (below). W: for prompts longer than half
the room, the wait of the deployment's prefill servers as one M/G/k queue (Allen-Cunneen with
the prompt lengths' squared coefficient of variation cv^2; Pollaczek-Khinchine for k = 1);
for shorter ones (gated admission) the rest of the step under way: with k = 1 a prompt step
(a share rho of the time, length-biased over the steps' prompt tokens min(C - n_a, A), A the
compound Poisson tokens that came during the step before: ``prefill_backlog``; in a pipeline
over the step's first chunk's prompt, whose micro-batch sets the step) or a decode step (a
share (1 - rho) P(N >= 1)), the rest uniform; the prompt tokens earlier steps left over their
room, L, are ahead of the prompt in its own steps (Lindley's recursion, Cramer-Lundberg tail,
entered from the step law: ``prefill_backlog``); with k > 1 the same at the replica the
router chose, rho replaced by P_join = min(rho, delta h(S)), the refills' first-order count
capped by the prompt steps' share of the time (``queueing.prompt_step_join_probability``),
its step's prompts arriving at lambda P_join / rho, the left-over tokens' prompts a round
robin's count (the replica takes about every k-th arrival). W_r the wait behind a prompt the joined replica
still prefills (least-loaded routing counts requests, not prefills: ``queueing.refill_*``, k > 1
and prompts longer than half the room only), over the prompt lengths' prefill times s_i / x
full (a longer prefill collects more refills: ``queueing.refill_law_*``).
Gated prompts (any k): the wait and the own step by the joined replica's state on arrival,
a prompt step under way (P_join), a decode step under way or idle, its step holding the prompts
that came during the step under way (``arrival_state``); the quantile over the states.
Percentiles otherwise: P(W + own(s) > t) = 1 - q averaged over the equally likely prompt lengths
(``ServiceLoad.prompt_points``; else the prompt at that percentile of the lengths), W's tail
as above (the exponential tail for M/G/k), plus W_r's quantile, at n_a's normal quantile.
TPOT percentiles: the mean plus the root sum of squares of
the spread of the count a request sees over its life, of the prompt steps in its life
(``decode_life``: Poisson over a life of L = D' - 1 steps, L over the output lengths, each
event p = E[T^2] E[K] / E[T]^2 steps, T_i = K_i delta_i the time prompt i adds: K_i =
max(1, s_i / (C - n_a)) steps of delta_i = step(min(s_i, C - n_a), n_a) - step(0, n_a)) and
of what its own context adds to every step (its prompt s_i against the mean s:
step(0, n', c + (s_i - s) / n') - step(0, n', c) over the prompt lengths; ``tpot.tpot_quantile_s``;
the count at the quantile of the deployment's outstanding total, variance k a v, v =
``routing.life_variance_share`` of the loop gain G = (n_a Delta K + (n' - 1) b E[L]) /
((D - 1) TPOT), ``routing.total_count_gain``);
on one queue instead the life's decode time as shot noise (prompts
arriving in it bring their steps and a decode; the life's length feeds back:
``decode_life.one_queue_tpot_quantile_s``). E2E = TTFT + (D - 1) TPOT, both at the percentile.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.service_types import (  # noqa: F401 (re-exported: the model's types)
    PERCENTILES,
    LeadStepNs,
    Replica,
    ServiceLoad,
    ServiceMetrics,
    Slo,
    StepNs,
    z_of,
)
from optimizer.costs.serving.steady_state import steady_state
from optimizer.costs.serving.tpot import tpot_quantile_s
from optimizer.costs.serving.ttft import ttft_model

_RELATIVE_TOLERANCE = 1e-7  # bisection stops when the bracket is this narrow, relatively


def predict(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float,
            with_ttft: bool = True) -> ServiceMetrics:
    """Metrics of the deployment at ``rate_rps`` requests per second (routed to the
    least-loaded queue); an unsustainable rate gives infinite latencies and ``stable=False``.
    ``with_ttft=False`` leaves the TTFT figures (and the E2E) NaN, for a caller that replaces
    them (the disaggregated prefill pool's law): they cost most of a prediction."""
    per_queue = rate_rps / rep.queues
    st = steady_state(rep, knobs, load, per_queue)
    tokens_per_gpu = rate_rps * load.output_tokens / rep.gpus
    if st is None:
        inf = math.inf
        return ServiceMetrics(rate_rps, False, 1.0, float(knobs.max_running_requests), 0, 0,
                              inf, inf, inf, inf, inf, inf, tokens_per_gpu)
    tpot = {p: tpot_quantile_s(rep, knobs, load, st, p) * 1e3 for p in PERCENTILES}
    if not with_ttft:
        nan = math.nan
        return ServiceMetrics(
            rate_rps, True, max(st.rho, st.running / knobs.max_running_requests), st.running,
            math.ceil(st.full_ns), math.ceil(st.decode_ns), nan, nan, nan, nan, st.tpot_s * 1e3, nan,
            tokens_per_gpu, tpot[50], tpot[90], tpot[99])
    ttft_at, ttft_mean_s = ttft_model(rep, knobs, load, rate_rps, st)
    ttft = {p: ttft_at(p) for p in PERCENTILES}
    steps = max(0, load.output_tokens - 1)
    return ServiceMetrics(
        rate_rps, True, max(st.rho, st.running / knobs.max_running_requests), st.running,
        math.ceil(st.full_ns), math.ceil(st.decode_ns), ttft_mean_s(), ttft[50], ttft[90],
        ttft[99], st.tpot_s * 1e3, ttft[90] + steps * tpot[90] / 1e3, tokens_per_gpu,
        tpot[50], tpot[90], tpot[99])


def meets(m: ServiceMetrics, slo: Slo, load: ServiceLoad) -> bool:
    """Whether every SLO holds at its percentile."""
    if not m.stable:
        return False
    return _within(m.ttft_at(slo.percentile), m.tpot_at(slo.percentile), slo, load)


def _within(ttft_s: float, tpot_ms: float, slo: Slo, load: ServiceLoad) -> bool:
    """Whether a TTFT and a TPOT at the SLO percentile, and their E2E, meet the SLOs."""
    e2e = ttft_s + max(0, load.output_tokens - 1) * tpot_ms / 1e3
    return ((slo.max_ttft_s is None or ttft_s <= slo.max_ttft_s)
            and (slo.max_tpot_ms is None or tpot_ms <= slo.max_tpot_ms)
            and (slo.max_e2e_latency_s is None or e2e <= slo.max_e2e_latency_s))


def meets_at(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float, slo: Slo) -> bool:
    """``meets(predict(rep, knobs, load, rate_rps), slo, load)`` (the same figures, so the
    same answer) computing only what the SLOs ask for: the TPOT at their percentile first,
    then the TTFT at it unless the TPOT already fails or no SLO needs it."""
    st = steady_state(rep, knobs, load, rate_rps / rep.queues)
    if st is None:
        return False
    tpot_ms = tpot_quantile_s(rep, knobs, load, st, slo.percentile) * 1e3
    if slo.max_tpot_ms is not None and not tpot_ms <= slo.max_tpot_ms:
        return False
    if slo.max_ttft_s is None and slo.max_e2e_latency_s is None:
        return True
    return _within(ttft_model(rep, knobs, load, rate_rps, st)[0](slo.percentile), tpot_ms, slo, load)


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
    asks for the widest tuple of a group twice: to prune, then to evaluate) in the replica's
    ``memo``, so it dies with the replica."""
    key = ("sustainable_rps", knobs, load)
    if key not in rep.memo:
        rep.memo[key] = largest_rate(lambda r: steady_state(rep, knobs, load, r / rep.queues) is not None,
                                     _start_rps(rep, knobs, load))
    return rep.memo[key]


def goodput_rps(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, slo: Slo) -> float:
    """DistServe's goodput: the highest deployment rate at which the SLO percentile of
    requests meets every SLO; by bisection (every predicted latency is non-decreasing in
    the rate, so meeting the SLOs is monotone)."""
    return largest_rate(lambda r: meets_at(rep, knobs, load, r, slo), _start_rps(rep, knobs, load))
