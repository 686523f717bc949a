"""The greedy baseline that ``moeopt place`` is compared with (not part of the product).

It follows the recipe of DeepSeek's EPLB (``deepseek-ai/EPLB`` ``eplb.py``, the global
policy): give each redundant slot to the expert whose per-replica load is currently the
heaviest, then place replicas heaviest first onto the least-loaded rank that still has a
free slot and does not already hold that expert.

Loads are routed-token counts per expert of one layer (any non-negative numbers); a rank's
load is the sum over its replicas of the expert's tokens divided by its replica count.
"""

from __future__ import annotations

import heapq


def greedy_replicas(loads: list[float], num_slots: int, max_replicas: int) -> list[int]:
    """[E] replica counts summing to ``num_slots``: every expert once, each further slot to
    the expert with the heaviest per-replica load (ties: lower id), at most ``max_replicas``."""
    count = [1] * len(loads)
    heap = [(-float(n), e) for e, n in enumerate(loads)]
    heapq.heapify(heap)
    for _ in range(num_slots - len(loads)):
        while True:
            _, e = heapq.heappop(heap)
            if count[e] < max_replicas:
                break
        count[e] += 1
        if count[e] < max_replicas:
            heapq.heappush(heap, (-loads[e] / count[e], e))
    return count


def greedy_place(loads: list[float], num_ranks: int, redundant: int = 0) -> list[list[int]]:
    """[num_ranks][slots] expert ids: replicas by ``greedy_replicas``, then heaviest replica
    first onto the least-loaded rank with a free slot not yet holding that expert."""
    num_experts = len(loads)
    slots = (num_experts + redundant) // num_ranks
    count = greedy_replicas(loads, num_experts + redundant, num_ranks)
    items = sorted(((loads[e] / count[e], e) for e in range(num_experts) for _ in range(count[e])),
                   key=lambda it: (-it[0], it[1]))
    ranks: list[list[int]] = [[] for _ in range(num_ranks)]
    total = [0.0] * num_ranks
    for w, e in items:
        free = [g for g in range(num_ranks) if len(ranks[g]) < slots and e not in ranks[g]]
        if not free:  # only ranks already holding e have room: move another expert out
            g = next(g for g in range(num_ranks) if len(ranks[g]) < slots)
            h, f = next((h, f) for h in range(num_ranks) if e not in ranks[h]
                        for f in ranks[h] if f not in ranks[g])
            ranks[h].remove(f)
            ranks[g].append(f)
            total[h] -= loads[f] / count[f]
            total[g] += loads[f] / count[f]
            free = [h]
        g = min(free, key=lambda g: (total[g], g))
        ranks[g].append(e)
        total[g] += w
    return ranks


def rank_loads(loads: list[float], ranks: list[list[int]]) -> list[float]:
    """Per-rank load: tokens of each expert split evenly over its replicas."""
    count: dict[int, int] = {}
    for experts in ranks:
        for e in experts:
            count[e] = count.get(e, 0) + 1
    return [sum(loads[e] / count[e] for e in experts) for experts in ranks]


def balancedness(loads: list[float], ranks: list[list[int]]) -> float:
    """Mean rank load / max rank load (1.0 = perfect)."""
    per_rank = rank_loads(loads, ranks)
    return (sum(per_rank) / len(per_rank)) / max(per_rank) if max(per_rank) > 0 else 1.0
