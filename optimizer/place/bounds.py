"""The valid lower bound on a layer's max rank load, and the min-max replica counts it uses.

Lower bound (valid for every placement): ``max(mean, w* + fill, pigeonhole)``, where
``w*`` is the least possible heaviest per-replica load ``min_r max_e n[e]/r[e]`` (exact by
the greedy "next replica to the heaviest per-replica load", :func:`min_max_replicas`),
``fill`` the sum of the S-1 smallest ``n[f] / max_replicas`` (the other slots of that
replica's rank), and for ``R = 0`` some rank holds ``j+1`` of the ``j*G+1`` heaviest
experts. Loads are summed as Python floats (never int64, which can overflow).
"""

from __future__ import annotations

import heapq
import time

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
    # of other experts, each at least n_f / cap
    fill = sum(sorted(x / cap for x in n)[: slots - 1])
    bound = max(sum(n) / g, max(x / c for x, c in zip(n, count)) + fill)
    if spec.redundant == 0:
        p = sorted(n, reverse=True)
        j = 1
        while j * g + 1 <= num_experts:  # some rank holds j+1 of the j*G+1 heaviest experts
            if deadline is not None and time.monotonic() >= deadline:
                break
            bound = max(bound, sum(p[j * g - j: j * g + 1]))
            j += 1
    return bound

