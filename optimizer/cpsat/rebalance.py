"""Cheap improvement of one layer's expert placement: pairwise swaps off the hottest rank.

Used by ``pruning`` on layers too large to model jointly (their placement is fixed in the
deployment model), before any CP-SAT search: when the swaps bring the hot rank down to the
cheap lower bound (``costs.config_bounds.hot_load_lower_bound``) the placement is proven
optimal without a solver. Array operations over (experts on the hot rank) x (every other
expert) per swap, a few hundred swaps at most.
"""

from __future__ import annotations

import numpy as np

# Swaps tried per layer at most (each strictly lowers (hot load, ranks at it), so the
# search ends anyway; the cap bounds the time on adversarial loads).
MAX_SWAPS = 400


def rebalance(loads: tuple[int, ...], ranks: list[list[int]], lower: int) -> list[list[int]]:
    """``ranks`` (rank -> expert ids, equal sizes) improved by swaps of one expert on the
    hottest rank (lowest index among ties) with one expert elsewhere, each the swap that
    leaves the smaller of the two ranks' new maximum, accepted only when that maximum is
    below the current hot load; stops at ``lower`` (a valid lower bound) or when no swap
    helps. Deterministic; returns new lists (rank order and sizes kept)."""
    ep = len(ranks)
    weight = np.asarray(loads, dtype=np.int64)
    member = np.array([r for r, experts in enumerate(ranks) for _ in experts], dtype=np.int64)
    expert = np.array([x for experts in ranks for x in experts], dtype=np.int64)
    rank_of = np.empty(len(loads), dtype=np.int64)
    rank_of[expert] = member
    totals = np.bincount(rank_of, weights=weight, minlength=ep).astype(np.int64)
    for _ in range(MAX_SWAPS):
        hot_rank = int(np.argmax(totals))
        hot = int(totals[hot_rank])
        if hot <= lower:
            break
        mine = np.flatnonzero(rank_of == hot_rank)
        others = np.flatnonzero(rank_of != hot_rank)
        delta = weight[mine][:, None] - weight[others][None, :]  # load moved off the hot rank
        peak = np.maximum(hot - delta, totals[rank_of[others]][None, :] + delta)
        peak = np.where(delta > 0, peak, hot)
        best = int(np.argmin(peak))  # first minimum: deterministic
        if int(peak.flat[best]) >= hot:
            break
        a, b = mine[best // len(others)], others[best % len(others)]
        rank_b = int(rank_of[b])
        moved = int(delta.flat[best])
        totals[hot_rank] -= moved
        totals[rank_b] += moved
        rank_of[a], rank_of[b] = rank_b, hot_rank
    out: list[list[int]] = [[] for _ in range(ep)]
    for x in range(len(loads)):
        out[int(rank_of[x])].append(x)
    return out
