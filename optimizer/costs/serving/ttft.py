"""TTFT of one configuration and knob tuple at one request rate, given its steady state
(``metrics.predict``; the formulas are in ``metrics``' module doc and in docs/serving-model.md,
"TTFT: the wait behind other prompts, plus the prompt's own steps"): the wait before a
prompt's first chunk and its own steps, by case:
- gated prompts (at most half the step's room): the joined replica's state on arrival
  (``arrival_state``; in a pipeline the prompt step under way is costed over its first
  chunk's prompt, ``OwnSteps.lead_law``) and the prompt tokens earlier steps left over their
  room (``prefill_backlog``, on every queue count);
- longer prompts: the deployment's prefill servers as one M/G/k queue plus, on k > 1 queues,
  the wait behind a prefill the joined replica still runs (``queueing.refill_law_*``); on one
  queue the server's time per prompt is step-discrete (``queueing.step_discrete_service_s``:
  each busy period ends with a partial step that costs more than its tokens' share);
and a prompt's own steps step by step (``own_steps``). A quantile over the prompt lengths reads
their 32 equally likely points as the continuous law they stand for, linear in the level
between the points' levels (``service_types.between_points``): as atoms the p90 sat on the
29th point (level 0.891).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving.arrival_state import ArrivalState, step_tokens_by_state, ttft_quantile_s
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.own_steps import STEP_GRID, OwnSteps
from optimizer.costs.serving.prefill_backlog import leftover_steps, step_tokens_law
from optimizer.costs.serving.service_types import POINT_PARTS, Replica, ServiceLoad, between_points, z_of
from optimizer.costs.serving.steady_state import Steady, routed_at, step_at

TtftModel = tuple[Callable[[int], float], Callable[[], float]]  # (TTFT at a percentile, mean TTFT), s


def ttft_model(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float, st: Steady) -> TtftModel:
    """(TTFT at a percentile, mean TTFT), s, at ``rate_rps`` with the steady state ``st``
    (``metrics.predict``; module doc): the work every percentile shares is done here once, each
    figure only when asked for. A prompt at most half the room is admitted at the end of the
    step under way with every prompt that came during it (gated: no queue of prompts); a
    longer one queues as at the deployment's prefill servers, one M/G/k queue."""
    gated = 2 * load.prompt_tokens <= knobs.prefill_chunk_tokens - st.joined
    # P(the joined replica runs a step): it holds a decode (one queue) or any request (k > 1)
    busy = q.jsq_joined_busy(st.running, 1) if rep.queues == 1 else \
        q.jsq_outstanding(st.running + st.prompts, rep.queues)[1]
    own = OwnSteps(rep, knobs, load, st, rate_rps / rep.queues, 0.0 if gated else busy)

    def joined_at(percentile: int) -> float:  # n_a at the quantile of the deployment's count
        z = z_of(percentile)
        if rep.queues == 1:
            return q.jsq_joined_quantile(st.running, 1, z)
        return st.joined if z <= 0.0 else routed_at(st, rep.queues, z, 1.0)[0]
    if gated:
        return _gated_model(rep, knobs, load, rate_rps, st, busy, own, joined_at)
    return _queued_model(rep, knobs, load, rate_rps, st, own, joined_at)


def _refills_per_s(rep: Replica, load: ServiceLoad, st: Steady) -> float:
    """The rate (1/s) at which a replica that a prompt joined falls back to the least-loaded
    count behind it (least-loaded routing counts requests, not prefills): its n_a decodes
    finish at n_a / life, life = (D - 1) TPOT; the next arrival then joins it
    (``queueing.refill_*``); 0 on one queue."""
    life_s = max(0, load.output_tokens - 1) * st.tpot_s
    return st.joined / life_s if rep.queues > 1 and life_s > 0 else 0.0


def steps_over_room_s(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, st: Steady) -> tuple[np.ndarray, np.ndarray]:
    """(r, step(r)): prompt tokens r on ``STEP_GRID`` equal cells over the room [0, C - n_a]
    (shape STEP_GRID + 1) and the step of r prompt tokens (floored, cut at C - k) beside the
    steady state's n_a decodes, s."""
    budget, ctx = knobs.prefill_chunk_tokens, load.decode_context_tokens
    tokens = np.linspace(0.0, budget - st.joined, STEP_GRID + 1)
    steps_s = np.array([step_at(lambda k, r=r: rep.step_ns(knobs, max(0, min(math.floor(r), math.floor(budget - k))), k, ctx),
                                st.joined) * 1e-9 for r in tokens])
    return tokens, steps_s


def partial_step_excess_s(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, st: Steady) -> float:
    """w (s): what a prompt step of r < C - n_a prompt tokens beside n_a decodes takes more
    than r / (C - n_a) of a full one, step(r) - r / (C - n_a) step(C - n_a), averaged over r
    uniform on [0, C - n_a] (trapezoid over ``STEP_GRID`` cells): the last step of a prefill
    busy period on one queue (``queueing.step_discrete_service_s``)."""
    tokens, steps_s = steps_over_room_s(rep, knobs, load, st)
    excess = steps_s - tokens / tokens[-1] * steps_s[-1]
    return float((excess[:-1] + excess[1:]).sum()) / (2 * STEP_GRID)


def _queued_model(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float, st: Steady, own: OwnSteps,
                  joined_at: Callable[[int], float]) -> TtftModel:
    """Prompts longer than half the room: the wait at the deployment's prefill servers as one
    M/G/k queue (exponential tail; on one queue at the step-discrete service time,
    ``queueing.step_discrete_service_s``), plus on k > 1 queues the wait behind a prefill the
    joined replica still runs, over the prompt lengths' prefill times (length-biased:
    ``queueing.refill_law_*``), plus the own steps (the rest of a step under way in them)."""
    service_s = load.prompt_tokens / st.chunk_tokens * st.full_ns * 1e-9
    if rep.queues == 1:  # k > 1: not measured, left fluid
        service_s = q.step_discrete_service_s(service_s, partial_step_excess_s(rep, knobs, load, st), rate_rps)
    wait_s, p_wait = q.mgk_mean_wait_s(rate_rps, service_s, load.prompt_cv2, rep.queues)
    freed = _refills_per_s(rep, load, st)
    prefills_s = load.prompt_lengths() / st.chunk_tokens * st.full_ns * 1e-9
    mean_wait_s = wait_s + q.refill_law_mean_wait_s(prefills_s, freed, rate_rps)

    def wait_tail(t: np.ndarray) -> np.ndarray:
        """P(wait > t) for t >= 0 (the exponential tail)."""
        if wait_s <= 0.0 or p_wait <= 0.0:
            return np.zeros_like(t)
        return p_wait * np.exp(-p_wait * t / wait_s)

    def ttft_at(percentile: int) -> float:
        """The wait plus the own steps at ``percentile``: over the equally likely prompt
        lengths when the load has them (P(wait + own(s) > t) = 1 - q, averaged over s), else
        the prompt at that percentile of the lengths; n_a at its normal quantile."""
        quantile = percentile / 100
        prompts = load.prompt_points or (load.prompt_at(percentile),)
        refill = q.refill_law_wait_quantile_s(prefills_s, freed, rate_rps, quantile)
        owns = between_points(own(joined_at(percentile), prompts))  # the lengths' law between its points
        return refill + mixture_quantile_s(owns, np.full(len(owns), 1.0 / len(owns)), wait_tail,
                                            q.wait_quantile_s(wait_s, p_wait, quantile), quantile)

    def ttft_mean_s() -> float:
        return mean_wait_s + float(own(st.joined, load.prompt_points or (load.prompt_tokens,)).mean())
    return ttft_at, ttft_mean_s


def _gated_model(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float, st: Steady,
                 busy: float, own: OwnSteps, joined_at: Callable[[int], float]) -> TtftModel:
    """Prompts at most half the room: the joined replica's state on arrival (``arrival_state``:
    a prompt step under way, a decode step, idle), each with its wait's law and the tokens of
    the prompt's own step; and the prompt tokens earlier steps left over their room
    (``prefill_backlog``)."""
    per_queue = rate_rps / rep.queues
    budget, ctx = knobs.prefill_chunk_tokens, load.decode_context_tokens
    mean_prompts = load.prompt_points or (load.prompt_tokens,)
    service_s = st.full_ns * 1e-9
    # the step under way at the joined replica is a prompt step (one queue: a share rho of
    # the time; k > 1: P_join, ``queueing.prompt_step_join_probability``) or a decode step (a
    # share (1 - P_join) P(busy)); the rest of either is uniform. On k > 1 queues the arrivals
    # at a replica during its prompt step come at lambda P_join / rho (the router's
    # thinning; lambda on one queue), which sets the steps' tokens and the left-over backlog
    idle_s = step_at(own.idle_ns, max(1.0, st.joined)) * 1e-9
    p_join, step_rate = st.rho, per_queue
    if rep.queues > 1:
        p_join = q.prompt_step_join_probability(service_s, _refills_per_s(rep, load, st), rate_rps, st.rho)
        step_rate = per_queue * p_join / st.rho if st.rho > 0.0 else 0.0
    decode_share = (1.0 - p_join) * busy
    # the prompt steps' law (s, probability), length-biased: P(rest > t | a prompt step) =
    # E[(T - t)^+] / E[T]
    room = budget - st.joined
    under_way_s = st.rho * service_s + (1.0 - st.rho) * idle_s
    tokens, step_p = step_tokens_law(mean_prompts, step_rate * under_way_s, room)
    grid, costs = steps_over_room_s(rep, knobs, load, st)
    step_s = np.interp(tokens, grid, costs)
    # in a pipeline the step is its first micro-batch's, which holds the step's first chunk
    # whole: its length is a prompt of the workload's law, not the mean one (measured on
    # random_0_20: E[T^2] / E[T] 0.81 s simulated, 0.55 s over the tokens, 0.78 s over the lead)
    if own.pipelined:
        step_s, step_p = own.lead_law(st.joined, mean_prompts, float(tokens @ step_p), room)
    mean_step_s = float(step_s @ step_p)
    wait_s = p_join * float(step_s**2 @ step_p) / (2.0 * mean_step_s) + decode_share * idle_s / 2.0
    # the prompt tokens a step leaves over its room (``prefill_backlog``: Lindley's recursion
    # over the steps, full steps while it lasts, entered from a prompt step of the law above)
    # are ahead of the prompt (token FCFS): its own steps count them (``OwnSteps``' left_over),
    # so in a pipeline they cost whole steps. On k > 1 queues too: least-loaded routing
    # balances the requests, not their prompt tokens, so a replica whose prompts overflow
    # keeps its share of the arrivals, about every k-th of them (a round robin's count, far
    # less spread than Poisson's: ``prefill_backlog``)
    full_step_s = step_at(lambda k: rep.step_ns(knobs, budget - k, k, ctx), st.joined) * 1e-9
    backlog_steps, backlog_p = leftover_steps(mean_prompts, step_rate * full_step_s, room,
                                              (step_rate * step_s, step_p), rep.queues)
    left_over = backlog_steps * room
    by_state = step_tokens_by_state(load.prompt_tokens, max(1, math.floor(room)), per_queue,
                                    p_join, st.rho, float(step_s**2 @ step_p) / mean_step_s, idle_s)

    # the prompt steps' law sorted, with its suffix sums sum_{i >= j} p_i and p_i T_i (0 past
    # the end): the rest's tail at many u by a binary search each (``prompt_step_tail``)
    order = np.argsort(step_s, kind="stable")
    sorted_s = step_s[order]
    above_p = np.append(np.cumsum(step_p[order][::-1])[::-1], 0.0)
    above_tp = np.append(np.cumsum((step_p * step_s)[order][::-1])[::-1], 0.0)

    def arrival_states(joined: float, prompts: tuple[int, ...], between: bool = False) -> list[ArrivalState]:
        """The three states of ``arrival_state`` with the own steps of ``prompts`` behind each
        left-over amount at ``joined`` decodes; ``between``: read between the equally likely
        prompts' levels (``service_types.between_points``: for a quantile)."""
        rows = len(prompts) * (POINT_PARTS if between and len(prompts) > 1 else 1)
        def prompt_step_tail(u):  # E[(T - u)^+] / E[T] = sum over T_j > u of p_j (T_j - u), / E[T]
            above = np.searchsorted(sorted_s, u, side="right")
            return (above_tp[above] - np.asarray(u) * above_p[above]) / mean_step_s
        def decode_step_tail(u):
            return np.clip(1.0 - np.asarray(u) / idle_s, 0.0, None)
        def no_wait(u):
            return np.zeros(np.shape(u))
        weights = np.repeat(backlog_p[None, :], rows, axis=0).ravel() / rows
        def owns(tokens):
            owned = own(joined, prompts, tokens, left_over)
            return (between_points(owned) if between else owned).ravel()
        return [ArrivalState(p_join, owns(by_state[0]), weights, prompt_step_tail, float(step_s.max())),
                ArrivalState(decode_share, owns(by_state[1]), weights, decode_step_tail, idle_s),
                ArrivalState(max(0.0, 1.0 - p_join - decode_share), owns(by_state[2]), weights, no_wait, 0.0)]

    def ttft_at(percentile: int) -> float:
        """The quantile over the arrival states (``arrival_state.ttft_quantile_s``): over the
        equally likely prompt lengths when the load has them, else the prompt at that
        percentile of the lengths; n_a at its normal quantile."""
        prompts = load.prompt_points or (load.prompt_at(percentile),)
        return ttft_quantile_s(arrival_states(joined_at(percentile), prompts, True), percentile / 100)

    def ttft_mean_s() -> float:  # the wait's mean and each state's own steps (the left-over tokens are in them)
        own_mean = sum(a.probability * float(a.owns_s @ a.weights) for a in arrival_states(st.joined, mean_prompts))
        return wait_s + own_mean
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
