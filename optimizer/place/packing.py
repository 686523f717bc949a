"""The initial plan of a layer: replicas packed heaviest first onto the least-loaded rank
(the EPLB recipe), with a round-robin layout as the fallback and as the plan returned when
the deadline passes before the packing ends."""

from __future__ import annotations

import logging
import time

import numpy as np

from optimizer.place.problem import PlaceSpec

log = logging.getLogger(__name__)


def pack(n: np.ndarray, count: np.ndarray, spec: PlaceSpec, S: int,
         deadline: float | None = None) -> tuple[list[list[int]] | np.ndarray, bool]:
    """[G][S] expert ids: heaviest replica (``n[e] / count[e]`` tokens) first onto the
    least-loaded rank (ties: lower id) with a free slot that does not hold the expert (nor,
    with ``spread_replicas``, its node). When only ranks holding the expert have room,
    another expert moves into such a rank to free a slot elsewhere; a round-robin layout is
    the last resort, and also what is returned once ``deadline`` (monotonic s) passes.
    Returns the plan and whether the deadline cut the packing short."""
    if deadline is not None and time.monotonic() >= deadline:
        return round_robin(count, spec, S), True
    G = spec.num_ranks
    per = G // spec.num_nodes
    items = sorted(((n[e] / count[e], e) for e in range(len(n)) for _ in range(int(count[e]))),
                   key=lambda it: (-it[0], it[1]))
    ranks: list[list[int]] = [[] for _ in range(G)]
    total = np.zeros(G, dtype=np.float64)      # [G] tokens placed so far
    fill = np.zeros(G, dtype=np.int64)         # [G] slots used
    holders: dict[int, set[int]] = {}          # expert -> ranks holding it
    on_node: list[dict[int, int]] = [{} for _ in range(spec.num_nodes)]

    def fits(e: int, g: int, leaving: int | None = None) -> bool:
        if g in holders.get(e, ()):
            return False
        if not spec.spread_replicas:
            return True
        held = on_node[g // per].get(e, 0) - (1 if leaving is not None and leaving // per == g // per else 0)
        return held == 0

    def free_ranks(e: int) -> np.ndarray:
        """Ranks with a free slot that ``fits(e, g)``, ascending."""
        mask = fill < S
        held = holders.get(e, ())
        if held:
            mask[list(held)] = False
            if spec.spread_replicas:
                for k in {g // per for g in held}:
                    mask[k * per:(k + 1) * per] = False
        return np.flatnonzero(mask)

    def put(e: int, g: int, sign: int) -> None:
        if sign > 0:
            ranks[g].append(e)
            holders.setdefault(e, set()).add(g)
        else:
            ranks[g].remove(e)
            holders[e].discard(g)
        fill[g] += sign
        total[g] += sign * n[e] / count[e]
        node = on_node[g // per]
        node[e] = node.get(e, 0) + sign

    for _, e in items:
        if deadline is not None and time.monotonic() >= deadline:
            log.info("place: the time limit passed while packing; round-robin plan")
            return round_robin(count, spec, S), True
        free = free_ranks(e)
        if len(free) == 0:
            move = _freeing_move(e, ranks, fill, S, fits, deadline)
            if move is None:
                timed_out = deadline is not None and time.monotonic() >= deadline
                return round_robin(count, spec, S), timed_out
            g, h, f = move
            put(f, h, -1)
            put(f, g, +1)
            free = np.array([h])
        put(e, int(free[int(np.argmin(total[free]))]), +1)
    return ranks, False


def _freeing_move(e: int, ranks, fill, S: int, fits, deadline: float | None):
    """(g, h, f): expert ``f`` moves from rank ``h`` (which can take ``e``) to rank ``g``
    (which has room), the first such move in rank order; None if there is none or the
    deadline passed."""
    G = len(ranks)
    for g in range(G):
        if fill[g] >= S:
            continue
        if deadline is not None and time.monotonic() >= deadline:
            return None
        for h in range(G):
            if fits(e, h):
                for f in ranks[h]:
                    if fits(f, g, leaving=h):
                        return g, h, f
    return None


def round_robin(count: np.ndarray, spec: PlaceSpec, S: int) -> np.ndarray:
    """[G][S] expert ids: slots filled expert by expert (most replicas first) along a rank
    order that cycles over nodes: r <= G consecutive slots are on distinct ranks, r <= K on
    distinct nodes."""
    G, K = spec.num_ranks, spec.num_nodes
    per = G // K
    cycle = np.array([k * per + l for l in range(per) for k in range(K)], dtype=np.int64)
    order = np.argsort(-np.asarray(count, dtype=np.int64), kind="stable")  # most replicas first
    slots = np.repeat(order, np.asarray(count, dtype=np.int64)[order])     # slot p -> expert
    assert len(slots) == G * S
    ranks = np.empty((G, S), dtype=np.int64)
    ranks[cycle] = slots.reshape(S, G).T  # slot p goes to rank cycle[p % G], in order of p
    return ranks


def pack_many(n: np.ndarray, count: np.ndarray, spec: PlaceSpec, S: int) -> tuple[np.ndarray, np.ndarray]:
    """``pack`` (no deadline) of every layer at once, one replica of every layer per step.

    ``n`` [L][E] float tokens, ``count`` [L][E] replica counts. Returns ``R`` [L][G][S]
    expert ids and ``done`` [L] bool: True where the layer's plan is exactly ``pack``'s
    (same order of replicas, same least-loaded rank with ties to the lower id, the same
    float sums); False where ``pack`` would need a freeing move (only ranks holding the
    expert have room): the caller packs those layers with ``pack``. The work is O(E + R)
    array steps of size [L][G], whatever the number of layers."""
    L, E = n.shape
    G, K = spec.num_ranks, spec.num_nodes
    per = G // K
    node_of = np.arange(G) // per
    weight = n / count                                         # [L][E] per-replica tokens
    items = np.empty((L, G * S), dtype=np.int64)
    for l in range(L):  # heaviest replica first, ties: lower id (pack's order)
        order = np.lexsort((np.arange(E), -weight[l]))
        items[l] = np.repeat(order, count[l][order])
    rows = np.arange(L)
    item_w = weight[rows[:, None], items]                      # [L][G*S]
    total = np.zeros((L, G))
    fill = np.zeros((L, G), dtype=np.int64)
    holds = np.zeros((L, E, G), dtype=bool)
    node_holds = np.zeros((L, E, K), dtype=bool) if spec.spread_replicas else None
    R = np.zeros((L, G, S), dtype=np.int64)
    done = np.ones(L, dtype=bool)
    for i in range(G * S):
        e = items[:, i]
        blocked = (fill >= S) | holds[rows, e]
        if node_holds is not None:
            blocked |= node_holds[rows, e][:, node_of]
        candidate = np.where(blocked, np.inf, total)
        g = np.argmin(candidate, axis=1)
        done &= ~blocked[rows, g]  # every rank blocked: pack would move another expert
        live = rows[done]
        g, e = g[done], e[done]
        R[live, g, fill[live, g]] = e
        fill[live, g] += 1
        total[live, g] += item_w[live, i]
        holds[live, e, g] = True
        if node_holds is not None:
            node_holds[live, e, node_of[g]] = True
    return R, done
