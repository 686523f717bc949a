"""TTFT of one configuration and knob tuple at one request rate, given its steady state
(``metrics.predict``; the formulas are in ``metrics``' module doc and in docs/serving-model.md,
"TTFT: the wait behind other prompts, plus the prompt's own steps"): the wait before a
prompt's first chunk and its own steps, by case:
- gated prompts (at most half the step's room): the joined replica's state on arrival
  (``arrival_state``), on one queue also the prompt tokens earlier steps left over their
  room (``prefill_backlog``);
- longer prompts: the deployment's prefill servers as one M/G/k queue plus, on k > 1 queues,
  the wait behind a prefill the joined replica still runs (``queueing.refill_law_*``);
and a prompt's own steps step by step (the others of its step half ahead and half behind,
its first chunk its own: ``Replica.lead_step_ns``).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving.arrival_state import ArrivalState, step_tokens_by_state, ttft_quantile_s
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.prefill_backlog import leftover_steps, step_tokens_law
from optimizer.costs.serving.service_types import Replica, ServiceLoad, z_of
from optimizer.costs.serving.steady_state import Steady, prompt_step_tokens, routed_at, step_at

_STEP_GRID = 8  # a prompt's last step is costed linear between multiples of C / 8 tokens


def ttft_model(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float,
                st: Steady) -> tuple[Callable[[int], float], Callable[[], float]]:
    """(TTFT at a percentile, mean TTFT), s, at ``rate_rps`` with the steady state ``st``
    (``metrics.predict``; module doc): the work every percentile shares is done here once, each
    figure only when asked for."""
    per_queue = rate_rps / rep.queues
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
    # P(the joined replica runs a step): it holds a decode (one queue) or any request (k > 1)
    busy = q.jsq_joined_busy(st.running, 1) if rep.queues == 1 else \
        q.jsq_outstanding(st.running + st.prompts, rep.queues)[1]
    # behind a prompt of the joined replica (least-loaded routing counts requests, not prefills)
    # the joined replica falls back to the least-loaded count as its n_a decodes finish
    # (rate n_a / life, life = (D - 1) TPOT); the next arrival then joins it (queueing.refill_*)
    life_s = max(0, load.output_tokens - 1) * st.tpot_s
    freed = st.joined / life_s if rep.queues > 1 and life_s > 0 else 0.0
    # gated: the step under way at the joined replica is a prompt step (one queue: a share rho
    # of the time; k > 1: P_join, ``queueing.prompt_step_join_probability``) or a decode step
    # (a share (1 - P_join) P(busy)); the rest of either is uniform. On k > 1 queues the
    # arrivals at a replica during its prompt step come at lambda P_join / rho (the router's
    # thinning; lambda on one queue), which sets the steps' tokens and the left-over backlog
    idle_s = step_at(idle, max(1.0, st.joined)) * 1e-9
    p_join, step_rate = st.rho, per_queue
    if gated and rep.queues > 1:
        p_join = q.prompt_step_join_probability(service_s, freed, rate_rps, st.rho)
        step_rate = per_queue * p_join / st.rho if st.rho > 0.0 else 0.0
        freed = 0.0  # the refill is the join into the prompt step under way, in the wait below
    decode_share = (1.0 - p_join) * busy if gated else 0.0
    step_s, step_p = np.array([service_s]), np.ones(1)  # the prompt steps' law (s, probability)
    if gated:  # length-biased: P(rest > t | a prompt step) = E[(T - t)^+] / E[T]
        room = budget - st.joined
        under_way_s = st.rho * service_s + (1.0 - st.rho) * idle_s
        tokens, step_p = step_tokens_law(mean_prompts, step_rate * under_way_s, room)
        grid = np.linspace(0.0, room, 9)
        costs = [step_at(lambda k, x=x: rep.step_ns(knobs, math.floor(min(x, budget - k)), k, ctx), st.joined) * 1e-9
                 for x in grid]
        step_s = np.interp(tokens, grid, costs)
        wait_s = p_join * float(step_s**2 @ step_p) / (2.0 * float(step_s @ step_p)) + decode_share * idle_s / 2.0
    # one queue, gated: the prompt tokens a step leaves over its room wait whole steps more
    # (``prefill_backlog``: Lindley's recursion over the steps, full steps while it lasts)
    backlog_steps, backlog_p, backlog_step_s = np.zeros(1), np.ones(1), 0.0
    if gated and rep.queues == 1:
        backlog_step_s = step_at(lambda k: rep.step_ns(knobs, budget - k, k, ctx), st.joined) * 1e-9
        backlog_steps, backlog_p = leftover_steps(mean_prompts, step_rate * backlog_step_s,
                                                  budget - st.joined)
    backlog_s = backlog_steps * backlog_step_s
    # the refills over the prompt lengths' prefill times (length-biased: ``queueing.refill_law_*``)
    prefills_s = load.prompt_lengths() / st.chunk_tokens * st.full_ns * 1e-9 if not gated else np.array([service_s])
    mean_wait_s = wait_s + float(backlog_s @ backlog_p) + q.refill_law_mean_wait_s(prefills_s, freed, rate_rps)

    def wait_tail(t: np.ndarray) -> np.ndarray:
        """P(wait > t) for t >= 0, prompts longer than half the room (the exponential tail)."""
        if wait_s <= 0.0 or p_wait <= 0.0:
            return np.zeros_like(t)
        return p_wait * np.exp(-p_wait * t / wait_s)

    # gated: the joined replica's state on arrival (``arrival_state``): the wait's law and the
    # tokens of the prompt's own step in each
    if gated:
        mean_step_s = float(step_s @ step_p)
        by_state = step_tokens_by_state(load.prompt_tokens, max(1, math.floor(budget - st.joined)), per_queue,
                                        p_join, st.rho, float(step_s**2 @ step_p) / mean_step_s, idle_s)

    def arrival_states(joined: float, prompts: tuple[int, ...]) -> list[ArrivalState]:
        """The three states of ``arrival_state`` with the own steps of ``prompts`` (and the
        left-over steps) at ``joined`` decodes."""
        def prompt_step_tail(u):
            return np.clip(step_s[None, :] - np.asarray(u)[..., None], 0.0, None) @ step_p / mean_step_s
        def decode_step_tail(u):
            return np.clip(1.0 - np.asarray(u) / idle_s, 0.0, None)
        def no_wait(u):
            return np.zeros(np.shape(u))
        weights = np.repeat(backlog_p[None, :], len(prompts), axis=0).ravel() / len(prompts)
        def owns(tokens):
            return (own_s(joined, prompts, tokens)[:, None] + backlog_s[None, :]).ravel()
        return [ArrivalState(p_join, owns(by_state[0]), weights, prompt_step_tail, float(step_s.max())),
                ArrivalState(decode_share, owns(by_state[1]), weights, decode_step_tail, idle_s),
                ArrivalState(max(0.0, 1.0 - p_join - decode_share), owns(by_state[2]), weights, no_wait, 0.0)]

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

    def own_s(joined: float, prompts: tuple[int, ...], step_tokens: int | None = None) -> np.ndarray:
        """The own steps of prompts of ``prompts`` tokens (and the rest of the step under way
        when one arrives, unless it is in the wait): the others of its step (x' - s tokens,
        ``step_tokens`` if given, else ``prompt_step_tokens``; none when prompts fill the
        room) are half ahead of it and
        half behind (FCFS); the tokens ahead and its own fill floor(. / (C - n_a)) full
        steps, and its last step holds the rest and those behind (linear between multiples
        of C / ``_STEP_GRID`` tokens). A step's first chunk is the prompt's own
        (``Replica.lead_step_ns``: its attention at its length; in a pipeline the first
        micro-batch, the largest, sets the step)."""
        joined = min(joined, budget - 1.0)
        tokens = prompt_step_tokens(rep, knobs, load, per_queue, joined) if step_tokens is None else step_tokens
        rest = 0.0 if gated else busy * step_at(idle, max(1.0, joined)) / 2.0  # (in the wait if under way)
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
            return step_at(at, joined) + (0 if pipelined else lead_extra(prompt, tokens))
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
        return st.joined if z <= 0.0 else routed_at(st, rep.queues, z, 1.0)[0]

    def ttft_at(percentile: int) -> float:
        """The wait plus the own steps at ``percentile``: over the equally likely prompt
        lengths when the load has them (P(wait + own(s) > t) = 1 - q, averaged over s),
        else the prompt at that percentile of the lengths; n_a at its normal quantile."""
        quantile = percentile / 100
        joined = joined_at(z_of(percentile))
        prompts = load.prompt_points or (load.prompt_at(percentile),)
        if gated:
            return ttft_quantile_s(arrival_states(joined, prompts), quantile)
        refill = q.refill_law_wait_quantile_s(prefills_s, freed, rate_rps, quantile)
        owns = own_s(joined, prompts)
        return refill + mixture_quantile_s(owns, np.full(len(owns), 1.0 / len(owns)), wait_tail,
                                            q.wait_quantile_s(wait_s, p_wait, quantile), quantile)

    def ttft_mean_s() -> float:
        if gated:  # the waits' mean and each state's own steps (the left-over steps are in the wait)
            own = sum(a.probability * float(a.owns_s @ a.weights) for a in arrival_states(st.joined, mean_prompts))
            return mean_wait_s + own - float(backlog_s @ backlog_p)
        return mean_wait_s + float(own_s(st.joined, mean_prompts).mean())

    return ttft_at, ttft_mean_s


def mixture_quantile_s(owns: np.ndarray, weights: np.ndarray, wait_tail, wait_q_s: float, quantile: float) -> float:
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
