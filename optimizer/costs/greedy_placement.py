"""The greedy expert placement: heaviest expert first onto the least-loaded rank with a free
slot. A warm start for CP-SAT and the baseline every exact placement must match or beat.
"""

from __future__ import annotations

import heapq


def heaviest_first(loads: tuple[int, ...]) -> list[int]:
    """Expert ids by decreasing load (ties: lower id first; the sort is stable)."""
    return sorted(range(len(loads)), key=lambda x: -loads[x])


def greedy_ranks(loads: tuple[int, ...], ep: int) -> list[list[int]]:
    """Heaviest expert first onto the least-loaded rank with a free slot (a hint); ties go
    to the lower rank."""
    slots = len(loads) // ep
    ranks: list[list[int]] = [[] for _ in range(ep)]
    open_ranks = [(0, r) for r in range(ep)]  # (routed load, rank) of ranks with a free slot
    for expert in heaviest_first(loads):
        total, r = open_ranks[0]
        ranks[r].append(expert)
        if len(ranks[r]) < slots:
            heapq.heapreplace(open_ranks, (total + loads[expert], r))
        else:
            heapq.heappop(open_ranks)
    return ranks
