"""The valid lower bound on a layer's max rank load, and the min-max replica counts it uses.

Lower bound (valid for every placement): ``max(mean, w* + fill, pigeonhole)``, where
``w*`` is the least possible heaviest per-replica load ``min_r max_e n[e]/r[e]`` (exact by
the greedy "next replica to the heaviest per-replica load", :func:`min_max_replicas`),
``fill`` the sum of the S-1 smallest ``n[f] / min(max_replicas, R + 1)`` (the other slots
of that replica's rank hold distinct other experts, none with more than ``R + 1``
replicas), and the pigeonhole terms below. Loads are summed as Python floats (never
int64, which can overflow).

Pigeonhole with replicas. A plan is ``E + R = G*S`` items (replicas) of weights
``n[e]/r[e]``; let ``W_(i)`` be the i-th heaviest. The ``j*G + 1`` heaviest items lie on G
ranks, so some rank holds ``j + 1`` of them, whose sum is at least
``W_(jG-j+1) + ... + W_(jG+1)``, plus ``S - j - 1`` further items of distinct experts
(at least the ``fill`` of that many). For ``R = 0`` the ``W_(i)`` are the sorted loads.
For ``R > 0`` they depend on the replica counts, so each is replaced by the least value it
can take, ``L_i <= W_(i)`` for every admissible ``r``: with ``m(t)`` = the least number of
items heavier than ``t`` over all ``r`` with ``r[e] <= cap`` and at most ``R`` extra
replicas, ``W_(i) > t`` whenever ``m(t) >= i``. An expert with ``n[e] <= t`` gives no such
item; one with ``n[e] > t`` gives one item (``r = 1``; more replicas all heavier than t
only add items) unless it gets ``r[e] >= ceil(n[e]/t)`` (if ``<= cap``), costing
``ceil(n[e]/t) - 1`` extra replicas; so ``m(t)`` = experts above t minus the most that a
budget of R extras can lift, cheapest first (exact for this relaxation, which allows
fewer than R extras and so contains every real plan). ``m`` falls as t grows; ``L_i`` is
the largest t found by bisection with ``m(t) >= i`` (any such t is a valid value).
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from optimizer.place.problem import PlaceSpec


def min_max_replicas(loads, num_slots: int, cap: int) -> list[int]:
    """[E] replica counts summing to ``num_slots`` (each in [1, cap]) that minimize the
    heaviest per-replica load ``max_e loads[e] / r[e]``: every further replica goes to the
    currently heaviest per-replica load (optimal for this min-max; ties: lower id)."""
    count = [1] * len(loads)
    heap = [(-float(n), e) for e, n in enumerate(loads) if cap > 1]
    heapq.heapify(heap)
    for _ in range(num_slots - len(loads)):
        _, e = heapq.heappop(heap)
        count[e] += 1
        if count[e] < cap:
            heapq.heappush(heap, (-float(loads[e]) / count[e], e))
    return count


def lower_bound(loads, spec: PlaceSpec, deadline: float | None = None,
                count: list[int] | None = None) -> float:
    """A load no placement's hottest rank can go below (tokens): see the module doc. The
    pigeonhole terms (O((E/G)^2) work) stop at ``deadline`` (monotonic s); the bound stays
    valid. ``count``: ``min_max_replicas`` of these loads, when the caller has it."""
    n = [float(x) for x in loads]
    num_experts, g = len(n), spec.num_ranks
    cap = spec.max_replicas()
    if count is None:
        count = min_max_replicas(n, num_experts + spec.redundant, cap)
    slots = spec.slots_per_rank(num_experts)
    # the rank holding the heaviest replica (>= w*) fills its other S-1 slots with replicas
    # of other experts, each at least n_f / min(cap, R + 1)
    smallest = sorted(x / min(cap, spec.redundant + 1) for x in n)
    fill = [0.0]
    for x in smallest[: slots - 1]:
        fill.append(fill[-1] + x)                # fill[k]: the k smallest
    bound = max(sum(n) / g, max(x / c for x, c in zip(n, count)) + fill[slots - 1])
    if spec.redundant == 0:
        p = sorted(n, reverse=True)
        j = 1
        while j * g + 1 <= num_experts:  # some rank holds j+1 of the j*G+1 heaviest experts
            if deadline is not None and time.monotonic() >= deadline:
                break
            bound = max(bound, sum(p[j * g - j: j * g + 1]))
            j += 1
        return bound
    arr = np.asarray(n, dtype=np.float64)
    # W_(i) of one admissible plan's counts (``count``) is >= L_i: a cheap test first
    items = np.sort(np.repeat(arr / np.asarray(count), count))[::-1]
    least: dict[int, float] = {}
    for j in range(1, slots):                    # R > 0: the L_i of the module doc
        if j * g + 1 > num_experts + spec.redundant:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        first = j * g - j + 1                    # L_first >= the other L_i of this term
        if (j + 1) * items[first - 1] + fill[slots - j - 1] <= bound:
            continue                             # cannot beat the bound: skip the bisections
        least.setdefault(first, least_item(arr, first, spec.redundant, cap))
        if (j + 1) * least[first] + fill[slots - j - 1] <= bound:
            continue
        heavy = 0.0
        for i in range(first, j * g + 2):
            if i not in least:
                least[i] = least_item(arr, i, spec.redundant, cap)
            heavy += least[i]
        bound = max(bound, heavy + fill[slots - j - 1])
    return bound


def fewest_heavier(n: np.ndarray, t: float, redundant: int, cap: int) -> int:
    """``m(t)`` of the module doc: the fewest replicas heavier than ``t`` tokens over all
    replica counts with at most ``redundant`` extra replicas and ``cap`` per expert."""
    over = n[n > t]
    need = np.ceil(over / t) if t > 0 else np.full(len(over), np.inf)
    cost = np.sort(need[need <= cap] - 1)
    lifted = int(np.searchsorted(np.cumsum(cost), redundant, side="right"))
    return len(over) - lifted


def least_item(n: np.ndarray, i: int, redundant: int, cap: int, steps: int = 64) -> float:
    """``L_i``: a value the i-th heaviest replica load reaches under every admissible
    replica count (the largest t found by bisection with ``fewest_heavier(t) >= i``)."""
    lo, hi = 0.0, float(n.max()) if len(n) else 0.0
    if hi <= 0 or fewest_heavier(n, lo, redundant, cap) < i:
        return 0.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if fewest_heavier(n, mid, redundant, cap) >= i:
            lo = mid
        else:
            hi = mid
    return lo

