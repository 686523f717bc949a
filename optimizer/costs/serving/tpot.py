"""TPOT percentiles of one configuration and knob tuple at a steady state (``metrics.predict``;
the formulas are in ``metrics``' module doc and in docs/serving-model.md, "TPOT"): a request's
TPOT is its decode time over its life's steps, so its spread comes from the decodes its
replica holds over the life, the prompt steps that land in it and, with spread prompt
lengths, its own context; on one queue the life's decode time as shot noise
(``decode_life``).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from optimizer.costs.serving.decode_life import one_queue_tpot_quantile_s, share_quantile, steps_per_prompt
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.routing import life_variance_share, total_count_gain
from optimizer.costs.serving.service_types import Replica, ServiceLoad, z_of
from optimizer.costs.serving.steady_state import Steady, routed_at, step_at


def tpot_quantile_s(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, st: Steady, percentile: int) -> float:
    """TPOT of the request at ``percentile``: the mean plus the root sum of squares of three
    independent spreads, the decodes its replica holds over its life
    (``queueing.jsq_seen`` at the lifetime-averaged count's normal quantile: the deployment's
    outstanding total over-dispersed by the pace's feedback, ``routing.total_count_gain``
    and ``routing.life_variance_share``), the prompt
    steps in its life (``decode_life.share_quantile`` over the output lengths: a life of L
    steps holds f0 L + e(L) on average, f0 = K n_a / (D - 1), K = s / (C - n_a) steps per
    prompt, in events of ``_steps_per_event``: a prompt of s_i tokens takes
    K_i = max(1, s_i / (C - n_a)) consecutive steps of its own length, so the time the
    prompts add is compound Poisson and the event matches its variance), less the mean share, times what a prompt chunk
    adds to a step (a share below the mean lowers it), and its own context
    (``_own_context_spread_ns``). The median is taken at the mean."""
    z = z_of(percentile)
    if load.output_tokens <= 1 or z <= 0.0:
        return st.tpot_s  # the median is taken at the mean
    ctx = load.decode_context_tokens
    def idle(k):
        return rep.step_ns(knobs, 0, k, ctx)
    if rep.queues == 1:
        return _one_queue_tpot_quantile_s(load, st, idle, knobs.prefill_chunk_tokens, percentile)
    lives = load.decode_lives()
    # the deployment's total is over-dispersed by the pace's feedback (``routing.total_count_gain``)
    gain = total_count_gain((load.output_tokens - 1) * st.tpot_s, (st.with_prompt_ns - st.decode_ns) * 1e-9,
                            st.prompt_steps, st.joined, _per_decode_s(idle, st.seen), st.seen - 1.0,
                            float(np.mean(lives)))
    seen_q = routed_at(st, rep.queues, z, life_variance_share(gain))[1]
    by_count = (step_at(idle, seen_q) - st.decode_ns) * (1.0 - st.shared)
    steps = load.prompt_tokens / st.chunk_tokens
    mean_steps = steps * st.joined / (load.output_tokens - 1) * lives + np.array(st.excess)
    share = share_quantile(lives, mean_steps, _steps_per_event(rep, knobs, load, st), percentile / 100)
    by_prompts = (share - st.shared) * (st.with_prompt_ns - st.decode_ns)
    by_context = _own_context_spread_ns(rep, knobs, load, st.seen, percentile)
    return st.tpot_s + (math.hypot(by_count, max(0.0, by_prompts), by_context) + min(0.0, by_prompts)) * 1e-9


def _steps_per_event(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, st: Steady) -> float:
    """Prompt steps per event of ``decode_life.share_quantile`` that give the time the
    prompts add to a life its variance: prompt i adds T_i = K_i delta_i, K_i = max(1, s_i / R)
    steps (R = C - n_a the room) of delta_i = step(min(s_i, R), n_a) - step(0, n_a) each; over
    a life the events are Poisson, so its added time has variance rate E[T^2], which a count of
    events of p steps of the mean delta E[T] / E[K] matches at p = E[T^2] E[K] / E[T]^2 (for
    one length max(1, K)). Prompts shorter than the room share a step with m - 1 others
    (m = x / s prompts per prompt step), whose lengths average out: the part of p above
    E[K^2] / E[K] is divided by m."""
    lengths = load.prompt_lengths()
    room = knobs.prefill_chunk_tokens - st.joined
    steps = np.maximum(1.0, lengths / room)
    plain = float((steps**2).mean() / steps.mean())
    if len(lengths) < 2:
        return plain
    ctx, decodes = load.decode_context_tokens, max(0, round(st.joined))
    idle = rep.step_ns(knobs, 0, decodes, ctx)
    delta = np.array([rep.step_ns(knobs, int(min(x, math.floor(room))), decodes, ctx) - idle for x in lengths], dtype=float)
    added = steps * delta
    if added.mean() <= 0.0:
        return plain
    timed = float((added**2).mean() * steps.mean() / added.mean() ** 2)
    together = max(1.0, st.chunk_tokens / load.prompt_tokens) if load.prompt_tokens < room else 1.0
    return plain + max(0.0, timed - plain) / together


def _own_context_spread_ns(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, seen: float,
                           percentile: int) -> float:
    """What a request's own context adds to each step of its life at ``percentile`` over the
    prompt lengths, less its mean, ns: every step attends its cache, so a request with a
    prompt s_i longer than the mean s adds its attention over s_i - s more tokens to each step
    it is in; with n' decodes at the mean context c, step(0, n', c + (s_i - s) / n') -
    step(0, n', c) (the step's attention read over the decodes' summed context); the
    lengths equally likely (``ServiceLoad.prompt_lengths``)."""
    lengths = load.prompt_lengths()
    if len(lengths) < 2:
        return 0.0
    ctx = load.decode_context_tokens
    def own(length):
        def added(k):  # the step's summed context moves by s_i - s: its mean by (s_i - s) / k
            k = max(1, k)
            shifted = max(1, ctx + round((length - load.prompt_tokens) / k))
            return rep.step_ns(knobs, 0, k, shifted) - rep.step_ns(knobs, 0, k, ctx)
        return step_at(added, seen)
    adds = np.array([own(x) for x in lengths])
    return max(0.0, float(np.quantile(adds, percentile / 100)) - float(adds.mean()))


def _per_decode_s(idle: Callable[[int], int], seen: float) -> float:
    """b, s: what one decode more adds to a decode step of a queue holding ``seen``, the
    secant of step(0, .) over seen +- sqrt(seen) (the count's Poisson sd; at least 1 apart)."""
    spread = max(1.0, math.sqrt(seen))
    low = max(1.0, seen - spread)
    return (step_at(idle, seen + spread) - step_at(idle, low)) / (seen + spread - low) * 1e-9


def _one_queue_tpot_quantile_s(load: ServiceLoad, st: Steady, idle: Callable[[int], int], budget: int,
                               percentile: int) -> float:
    """TPOT at ``percentile`` on one queue: ``decode_life.one_queue_tpot_quantile_s`` with the
    steady state's figures (lambda = n / ((D - 1) TPOT), b = the slope of step(0, .) over n' +- sqrt(n'),
    Delta = what a prompt step adds to a decode step; K over the prompt lengths for prompts
    longer than the room, else a prompt's share of the step it shares)."""
    lives = load.decode_lives()
    rate = st.running / ((load.output_tokens - 1) * st.tpot_s)
    per_decode_s = _per_decode_s(idle, st.seen)
    if load.prompt_tokens >= budget - st.joined:
        steps = steps_per_prompt(load.prompt_lengths(), budget - st.joined, st.rho)
    else:  # a prompt's share of a step it shares with 1 / K - 1 others
        steps = np.array([st.prompt_steps])
    mean_steps = st.prompt_steps * st.joined / (load.output_tokens - 1) * lives + np.array(st.excess)
    return one_queue_tpot_quantile_s(lives, st.tpot_s, rate, st.running, (st.with_prompt_ns - st.decode_ns) * 1e-9,
                                     per_decode_s, steps, mean_steps, percentile / 100, st.early)
