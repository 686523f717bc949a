"""The mean time of a prompt step over the law of the prompts it holds (prompts shorter
than the room: the gated chain of ``decode_life``), not the step of the mean make-up.

A step's time is not linear in its make-up: it grows faster than linearly in its prompt
tokens, a layer's attention is the larger of its compute and its KV traffic (the decodes'
cache reads set a floor that small prompt steps sit on), and the attention efficiency is
read at the step's mean attended context (many short prompts cost more per key than one
long one). So the model's prompt step of x prompt tokens beside k decodes is the mean over
the law of its prompts:
- the count N >= 1: a step takes the prompts that came during the step before, given at
  least one, Poisson: N zero-truncated Poisson (``count_law``), cut where P(N = n) <
  ``TAIL`` of the mode's;
- the lengths: N independent draws of the workload's equally likely prompt lengths
  (``ServiceLoad.prompt_points``; s alone for a fixed length), taken whole in order until
  the room C - k is full; the one that does not fit is a chunk of the rest of the room at
  the mean start of its chunks (``Replica.prompts_step_ns``, as the simulator's scheduler
  fills a step; its remainder is the next step's);
- the count's mean m is the one whose steps hold x prompt tokens on average, E[X](m) = x
  (X after the cut), so ``K = s / x`` and the prefill utilisation of the steady state keep
  their meaning: m is read off the curve (E[X](m), E[T](m)) costed at m = 1, 1.08, 1.08^2,
  ... until the step is full (``law_curve``), T linear in x between its points;
- per count n the quadrature ``compositions(n)``: 8 strata of one prompt's length; for
  several a shifted rank-1 lattice, J equally likely n-tuples of strata (J = 11 for 2-3
  prompts, 5 for more), each prompt's marginal the J strata once each, a stratum's length
  its mean (``stratum_lengths``: the mean length is kept); the counts 1, 2, 4, 8, ... are
  costed and a count between two is linear between them;
- the prompts' part E[T(N, lengths; k) - T(0; k)] is costed at the decode counts k = 1, 16,
  32, 64, ... (``_levels_around``) and is linear in k between them; the decode step T(0; k)
  is exact:  prompt step(x, k) = step(0, k) + E[T - T(0)](x, k).
Deterministic (no draws) and memoised in the replica (``Replica.memo``: the memos die with
it) per knobs without B (a step does not depend on it), count and level;
``tests/costs/test_prompt_mix.py`` checks it against a Monte Carlo of the same law (within
2 %). It needs ``Replica.prompts_step_ns``; without it (test doubles)
``steady_state.chain_step_ns`` keeps the mean make-up's step.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from functools import cache, lru_cache, wraps

from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.service_types import Replica, ServiceLoad

TAIL = 1e-4  # counts less likely than this fraction of the most likely one are left out
ONE_STRATA = 8  # the compositions of one prompt: strata of its length
LATTICES = {2: (11, 2, 2), 3: (11, 2, 2), 4: (5, 2, 4)}  # (J, g, h) for 2, 3, >= 4 prompts


def _per_replica(fn: Callable) -> Callable:
    """``fn(rep, *args)`` memoised in ``rep.memo`` under (its name, args): a memo that dies
    with the replica, where a module-level cache would keep every replica of a search alive."""
    @wraps(fn)
    def memoised(rep: Replica, *args):
        key = (fn.__name__, *args)
        if key not in rep.memo:
            rep.memo[key] = fn(rep, *args)
        return rep.memo[key]
    return memoised


@lru_cache(maxsize=1 << 12)
def count_law(mean: float) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(counts, probabilities) of a zero-truncated Poisson count with mean ``mean`` (>= 1;
    one prompt for a mean of 1): P(n) = a^n e^-a / (n! (1 - e^-a)), a / (1 - e^-a) = mean,
    cut where P(n) < ``TAIL`` of the largest, renormalised."""
    if mean <= 1.0 + 1e-9:
        return (1,), (1.0,)
    a = mean
    for _ in range(200):  # a = mean (1 - e^-a): the iterates decrease to the root
        nxt = mean * -math.expm1(-a)
        if abs(nxt - a) <= 1e-12 * a:
            break
        a = nxt
    top = int(a + 8.0 * math.sqrt(a) + 4.0)
    logs = [n * math.log(a) - a - math.lgamma(n + 1) for n in range(1, top + 1)]
    peak = max(logs)
    kept = [(n, math.exp(v - peak)) for n, v in zip(range(1, top + 1), logs) if v - peak >= math.log(TAIL)]
    total = sum(p for _, p in kept)
    return tuple(n for n, _ in kept), tuple(p / total for _, p in kept)


@cache
def compositions(count: int) -> tuple[tuple[int, ...], ...]:
    """The equally likely ``count``-tuples of strata (0 .. J - 1) of the quadrature: one
    prompt, each of ``ONE_STRATA`` strata; more, a shifted rank-1 lattice of J nodes
    (``LATTICES``: J prime, g a primitive root), node j's prompt i in stratum
    (j g^i + h i) mod J: each prompt's marginal is the J strata once each; the variance
    of the nodes' stratum sums is 1.0 and 1.27 times that of independent draws for 2 and
    3 prompts (J = 11), 0.19-1.75 for 4-16 (J = 5: the sum of more prompts spreads less
    relative to its mean, so its curvature matters less)."""
    if count == 1:
        return tuple((j,) for j in range(ONE_STRATA))
    strata, root, shift = LATTICES[min(count, 4)]
    return tuple(tuple((j * pow(root, i, strata) + shift * i) % strata for i in range(count))
                 for j in range(strata))


@lru_cache(maxsize=1 << 10)
def stratum_lengths(points: tuple[int, ...], strata: int) -> tuple[int, ...]:
    """The mean length of each of ``strata`` equal-probability strata of the equally likely
    ``points`` (sorted; their quantile function integrated over [j / J, (j + 1) / J]),
    rounded: the strata keep the mean."""
    n = len(points)
    out = []
    for j in range(strata):
        lo, hi = j * n / strata, (j + 1) * n / strata
        total = sum(points[i] * max(0.0, min(hi, i + 1) - max(lo, i)) for i in range(math.floor(lo), math.ceil(hi)))
        out.append(max(1, round(total / (hi - lo))))
    return tuple(out)


@_per_replica
def _count_moments(rep: Replica, knobs: ServingKnobs, points: tuple[int, ...], context: int, count: int,
                   level: int) -> tuple[float, float]:
    """(E[T - T(0)] ns, E[X] tokens) over the ``count``-prompt compositions beside ``level``
    decodes, cut at the room C - level."""
    room = knobs.prefill_chunk_tokens - level
    idle = rep.step_ns(knobs, 0, level, context)
    nodes = compositions(count)
    by_stratum = stratum_lengths(points, len(nodes) if count > 1 else ONE_STRATA)
    alike = Counter(tuple(by_stratum[j] for j in strata) for strata in nodes)  # (one for a fixed length)
    added = sum(times * (rep.prompts_step_ns(knobs, lengths, level, context) - idle) for lengths, times in alike.items())
    tokens = sum(times * min(room, sum(lengths)) for lengths, times in alike.items())
    return added / len(nodes), tokens / len(nodes)


COSTED_COUNTS = tuple(1 << j for j in range(16))  # 1, 2, 4, 8, ...


def costed_counts(count: int) -> tuple[int, int]:
    """The costed counts around ``count`` (``COSTED_COUNTS``; a count between two is linear
    between them: the step's mean grows smoothly with its prompts); (count, count) for a
    costed one."""
    i = bisect_right(COSTED_COUNTS, count) - 1
    low = COSTED_COUNTS[i]
    return (low, low) if low == count else (low, COSTED_COUNTS[i + 1])


MEAN_STEP = 1.08  # the count means the curve is costed at: 1, 1.08, 1.08^2, ...


@_per_replica
def law_curve(rep: Replica, knobs: ServingKnobs, points: tuple[int, ...], context: int,
              level: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(E[X] tokens, E[T - T(0)] ns) of a prompt step beside ``level`` decodes over the law
    of its prompts, at count means m = 1, 1.08, 1.08^2, ... until the step is full (E[X]
    within 0.5 % of the room C - level, or m past 4 rooms of prompts): both increase with m."""
    room = knobs.prefill_chunk_tokens - level
    cap = 4.0 * room / min(points) + 4.0
    held, added = [], []
    per_count: list[tuple[float, float]] = [(0.0, 0.0)]  # (E[T - T(0)], E[X]) of count n at [n]

    def moments(count: int) -> tuple[float, float]:
        while len(per_count) <= count:
            low, high = costed_counts(len(per_count))
            a_low, x_low = _count_moments(rep, knobs, points, context, low, level)
            if high > low:
                a_high, x_high = _count_moments(rep, knobs, points, context, high, level)
                w = (len(per_count) - low) / (high - low)
                a_low, x_low = a_low + w * (a_high - a_low), x_low + w * (x_high - x_low)
            per_count.append((a_low, x_low))
        return per_count[count]

    mean = 1.0
    while True:
        counts, probs = count_law(mean)
        moments(counts[-1])
        a = sum(p * per_count[n][0] for n, p in zip(counts, probs))
        x = sum(p * per_count[n][1] for n, p in zip(counts, probs))
        if held and x <= held[-1]:  # the room is full: more prompts hold no more tokens
            break
        held.append(x)
        added.append(a)
        if x >= 0.995 * room or mean > cap:
            break
        mean *= MEAN_STEP
    return tuple(held), tuple(added)


def added_ns(rep: Replica, knobs: ServingKnobs, points: tuple[int, ...], context: int, tokens: float,
             level: int) -> float:
    """E[T - T(0)], ns: what its prompts add to a prompt step beside ``level`` decodes over
    the law whose mean prompt tokens are ``tokens`` (linear between the curve's points; one
    prompt below the first, a full step past the last)."""
    held, added = law_curve(rep, knobs, points, context, level)
    i = bisect_right(held, tokens)
    if i == 0:
        return added[0]
    if i == len(held):
        return added[-1]
    return added[i - 1] + (tokens - held[i - 1]) / (held[i] - held[i - 1]) * (added[i] - added[i - 1])


FIRST_LEVEL = 16  # the decode counts the law is costed at: 1, 16, 32, 64, ...
LEVEL_RATIO = 2


def _levels_around(decodes: float) -> tuple[int, int]:
    """The levels k0 <= decodes < k1 of 1, ``FIRST_LEVEL`` and ``FIRST_LEVEL`` times the
    powers of ``LEVEL_RATIO`` (k0 = k1 = 1 below one decode: an empty step costs nothing,
    one with a decode its fixed part, which the prompts do not add again)."""
    if decodes <= 1.0:
        return 1, 1
    if decodes < FIRST_LEVEL:
        return 1, FIRST_LEVEL
    low = FIRST_LEVEL
    while low * LEVEL_RATIO <= decodes:
        low *= LEVEL_RATIO
    return low, low * LEVEL_RATIO


def mixed_prompt_step_ns(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, tokens: int,
                         decodes: float) -> float:
    """A prompt step of ``tokens`` prompt tokens (whole prompts: the chain case) beside a
    fractional count of ``decodes``, ns: step(0, k) + E[T - T(0)] over the law whose steps
    hold ``tokens`` on average, linear in k between the levels (module doc). Needs
    ``Replica.prompts_step_ns`` (``steady_state.chain_step_ns`` keeps the mean make-up's
    step without it)."""
    budget, ctx = knobs.prefill_chunk_tokens, load.decode_context_tokens
    decodes = min(decodes, budget - 1.0)
    low = math.floor(decodes)
    def idle(k):
        return rep.step_ns(knobs, 0, k, ctx)
    base = idle(low) + (decodes - low) * (idle(low + 1) - idle(low)) if decodes > low else idle(low)
    tokens = min(tokens, math.floor(budget - decodes))
    lo, hi = _levels_around(decodes)
    lo = min(lo, math.floor(budget - 1))
    hi = hi if decodes > lo and hi <= budget - 1 else lo
    added_lo, added_hi = _added_at(rep, _shape(knobs), _points(load), ctx, tokens, lo, hi)
    return base + (added_lo + (decodes - lo) / (hi - lo) * (added_hi - added_lo) if hi > lo else added_lo)


@_per_replica
def _added_at(rep: Replica, knobs: ServingKnobs, points: tuple[int, ...], context: int, tokens: int,
              low: int, high: int) -> tuple[float, float]:
    """``added_ns`` at the levels ``low`` and ``high``."""
    at_low = added_ns(rep, knobs, points, context, tokens, low)
    return at_low, at_low if high == low else added_ns(rep, knobs, points, context, tokens, high)


@lru_cache(maxsize=1 << 10)
def _shape(knobs: ServingKnobs) -> ServingKnobs:
    """The knobs with B = 1: B does not change a step (one memo for every B)."""
    return replace(knobs, max_running_requests=1)


@lru_cache(maxsize=1 << 10)
def _points(load: ServiceLoad) -> tuple[int, ...]:
    return tuple(sorted(load.prompt_points)) or (load.prompt_tokens,)
