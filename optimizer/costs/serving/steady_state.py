"""The steady state of one queue at a request rate (``metrics``' module doc gives the
formulas): the fixed point of the running decodes n by Little's law, with the decodes a new
prompt's step holds (n_a), those a decoding request sees (n'), the prefill utilisation rho,
the share f of a decode's steps that carry a prompt chunk and the mean TPOT; None past the
sustainable rate. One queue (k = 1) and several (least-loaded routing over outstanding
requests, ``routing``) take separate branches.

A prompt step of prompts shorter than the room (the chain case) costs the mean over the law
of the prompts it holds, not the step of its mean make-up (``chain_step_ns``,
``prompt_mix``): step(x, k) = step(0, k) + E[T - T(0)], the expectation over a
zero-truncated Poisson count of whole prompts of the workload's lengths, cut at the room,
whose steps hold x prompt tokens on average (so K = s / x still holds); wherever the
chain costs a prompt step: its length p(m) in the chain (``prompts_per_prompt_step``), the
prompt's step ``full`` (rho, the excess e(L)) and the decodes' view (TPOT). A prompt step
is convex in its tokens and its attention is read at its own mean context: on
``random_0_01`` the mean make-up's step was 110.9 ms where the simulated prompt steps take
131.7 ms and the law's mean 134.1 ms (sustainable rate 1.17x the simulated -> 1.01x)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving import routing
from optimizer.costs.serving.decode_life import busy_period_excess, prompts_per_prompt_step, steps_per_prompt
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.prompt_mix import mixed_prompt_step_ns
from optimizer.costs.serving.service_types import Replica, ServiceLoad

_FIXED_POINT_STEPS = 500
DECODE_VIEW_PARTS = 32  # the decodes' view of a prompt step: prompts rounded up to 1/32 of one


@dataclass(frozen=True)
class Steady:
    """One queue's steady state at a rate (counts per queue, step times in ns, TPOT in s)."""

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
    early: float = 0.0  # decodes that start with a request's (one queue: ``steady_state``)
    prompts: float = 0.0  # p, prompts outstanding per queue (waiting or prefilling; k > 1 only)


def step_at(step: Callable[[int], int], count: float) -> float:
    """step(count) for a fractional count: linear between the integers around it."""
    low = math.floor(count)
    frac = count - low
    base = step(low)
    return base if frac <= 1e-12 else base + frac * (step(low + 1) - base)


def mean(values: np.ndarray) -> float:
    """``float(values.mean())`` of a 1-D float array, the same float (numpy's pairwise sum over
    the count) without ``ndarray.mean``'s Python-level overhead (this runs in every iteration)."""
    return float(np.add.reduce(values)) / len(values)


def eighths(prompt_tokens: int, prompts: float, parts: int = 8) -> int:
    """Tokens of ``prompts`` prompts rounded up to 1 / ``parts`` of one (few distinct steps)."""
    return math.ceil(prompt_tokens * math.ceil(parts * prompts - 1e-9) / parts)


def prompt_step_tokens(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate: float, joined: float) -> int:
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
    idle_ns = step_at(lambda k: step(0, k), joined)
    x = min(room, eighths(s, 1.0 + rate * idle_ns * 1e-9))
    full_ns = step_at(lambda k: step(x, k), joined)
    rho = min(1.0, rate * s / x * full_ns * 1e-9)
    under_way_ns = rho * full_ns + (1.0 - rho) * idle_ns
    return min(room, eighths(s, 1.0 + rate * under_way_ns * 1e-9))


def chain_step_ns(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, tokens: int, decodes: float) -> float:
    """A prompt step of ``tokens`` prompt tokens in whole prompts shorter than the room
    (the chain case) beside a fractional count of ``decodes``, ns: the mean over the law of
    its prompts (``prompt_mix``) when the load decodes; a prefill-only load (one output
    token: the disaggregated prefill pool, ``disagg_prefill``) and a replica that cannot cost
    given prompts (``Replica.prompts_step_ns`` None: test doubles) keep the step of the mean
    make-up, linear between the integer counts."""
    if load.output_tokens > 1 and rep.prompts_step_ns is not None:
        return mixed_prompt_step_ns(rep, knobs, load, tokens, decodes)
    budget, ctx = knobs.prefill_chunk_tokens, load.decode_context_tokens
    return step_at(lambda k: rep.step_ns(knobs, min(tokens, math.floor(budget - k)), k, ctx), decodes)


def prompts_waiting(rep: Replica, load: ServiceLoad, rate: float, prefill_s: float, gated: bool) -> float:
    """Prompts waiting per queue (not yet in a step), lambda W by Little's law; W the
    deployment's prefill servers as one M/G/k queue for prompts longer than half the room
    (gated shorter ones wait at most the rest of one step: left out); inf past capacity."""
    if gated:
        return 0.0
    return q.littles_law_count(rate, q.mgk_mean_wait_s(rate * rep.queues, prefill_s, load.prompt_cv2, rep.queues)[0])


POISSON_TOTAL = 1.0  # the outstanding total's variance / mean at a fixed pace (M/G/inf)


def routed_at(st: Steady, replicas: int, z: float, variance_share: float) -> tuple[float, float, float]:
    """``routing.routed_at`` of a steady state (its waiting prompts: p - rho; a request sees
    the deployment's total size-biased, ``routing.total_seen_excess``)."""
    return routing.routed_at(st.running, st.rho, st.prompts - st.rho, replicas, z, variance_share, POISSON_TOTAL)


def steady_state(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate: float) -> Steady | None:
    """Fixed point of the steady state at ``rate`` per queue (module doc); None if not
    sustainable."""
    cap, budget, ctx = knobs.max_running_requests, knobs.prefill_chunk_tokens, load.decode_context_tokens
    def idle(k):
        return rep.step_ns(knobs, 0, k, ctx)
    decode_steps = max(0, load.output_tokens - 1)
    lives, lengths = load.decode_lives(), load.prompt_lengths()
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
            joined, seen, busy_k = routing.routed(running, prompts - waiting, waiting, rep.queues, POISSON_TOTAL)
        idle_d = step_at(idle, seen)
        room = budget - joined
        if load.prompt_tokens >= room:
            tokens = budget  # the step holds C - k prompt tokens beside k decodes
        else:  # the prompts of a prompt step as the steps hold them (``decode_life``)
            def prompt_step_s(m, joined=joined, room=room):
                x = min(math.floor(room), eighths(load.prompt_tokens, m, DECODE_VIEW_PARTS))
                return chain_step_ns(rep, knobs, load, x, joined) * 1e-9
            busy = q.jsq_busy_share(running, 1) if rep.queues == 1 else busy_k
            m = prompts_per_prompt_step(rate, idle_d * 1e-9, busy, prompt_step_s)
            tokens = min(math.floor(room), eighths(load.prompt_tokens, m, DECODE_VIEW_PARTS))
        def full(k, tokens=tokens):
            return rep.step_ns(knobs, min(tokens, budget - k), k, ctx)
        chunk = min(float(tokens), budget - joined)
        share = load.prompt_tokens / chunk  # prompt steps per prompt, fractional (prefill time)
        chain = load.prompt_tokens < room
        full_p = chain_step_ns(rep, knobs, load, tokens, joined) if chain else step_at(full, joined)
        rho = min(1.0, rate * share * full_p * 1e-9)
        if load.prompt_tokens >= room and rep.queues == 1:  # the decodes' view: whole steps per prompt, each
            # holding s / K tokens on average (``decode_life.steps_per_prompt``)
            share = mean(steps_per_prompt(lengths, room, rho))
            held = max(1, round(load.prompt_tokens / share))
            def full(k, tokens=held):
                return rep.step_ns(knobs, min(tokens, budget - k), k, ctx)
        full_d = (chain_step_ns(rep, knobs, load, tokens, min(seen, budget - 1.0)) if chain
                  else step_at(full, min(seen, budget - 1.0)))
        # prompt steps right after a decode's own (``decode_life``): one queue, the rest of the
        # prefill busy period it starts in (K the prefill's steps a prompt, f0 = K' n_a / (D - 1));
        # k > 1, short prompts, the chain from the refill (``routing.routed_excess``)
        if rep.queues == 1:
            excess = busy_period_excess(rho, load.prompt_tokens / chunk, load.prompt_cv2,
                                        min(1.0, share * joined / decode_steps) if decode_steps else 0.0, lives)
        elif load.prompt_tokens >= budget - joined:
            excess = routing.queued_behind_excess(rate, rep.queues, share * full_p * 1e-9, share, joined, running,
                                                  share * joined / decode_steps if decode_steps else 0.0, lives,
                                                  running + prompts)
        else:
            excess = routing.routed_excess(rate, rep.queues, full_p * 1e-9, joined, running,
                                           share * joined / decode_steps if decode_steps else 0.0, lives,
                                           running + prompts)
        shared = min(1.0, (share * joined + mean(excess)) / decode_steps) if decode_steps else 0.0
        tpot_s = (idle_d + shared * (full_d - idle_d)) * 1e-9
        nxt = q.littles_law_count(rate, decode_steps * tpot_s)
        if rep.queues > 1:  # the prompts the router counts (``routing.routed``)
            waiting = prompts_waiting(rep, load, rate, share * full_p * 1e-9, gated=load.prompt_tokens * 2 <= room)
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
            if rate * load.prompt_tokens / (budget - joined) * step_at(widest, joined) * 1e-9 >= 1.0:
                return None
            return Steady(nxt, joined, rho, shared, seen, full_p, idle_d, full_d, tpot_s, chunk,
                           tuple(float(e) for e in excess), share,
                           rate * own_prefill_s if rep.queues == 1 and decode_steps else 0.0,
                           prompts if rep.queues > 1 else 0.0)
        # the arrivals during a prompt's own steps beyond the even spread's K TPOT (one queue;
        # from the previous iterate: the same at the fixed point)
        running, last_prompts = nxt, prompts
        own_prefill_s = max(0.0, load.prompt_tokens / chunk * full_p * 1e-9 - share * tpot_s)
    return None  # no convergence: treated as not sustainable
