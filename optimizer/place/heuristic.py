"""The fast search of one layer: a pairwise descent on the hottest rank, and an iterated
local search that also changes replica counts. Both work on a :class:`LayerState` in place
and stop at a deadline (monotonic seconds), leaving a complete plan.

Descent: re-partition the hottest rank with a cooler one (all 2S-choose-S splits for
S <= 9, else single swaps) while that lowers the hottest rank. Local search: a move turns
one replica of an expert with >= 2 replicas into a new replica of another expert (replica
counts change), the descent repairs, and the move is kept if (max load, ranks at max)
improved; without redundant slots the move is a random swap with the hottest rank.
"""

from __future__ import annotations

import time

import numpy as np

from optimizer.place.layer_state import LayerState
from optimizer.place.problem import REL_TOL

ILS_STALL = 400              # local-search tries without improvement before a layer stops early
TRIES_PER_EFFORT = 20        # local-search tries per unit of Settings.effort; one try of a
                             # 256-expert layer took 10 ms (64 ranks, S = 5) to 160 ms (32 ranks,
                             # S = 9: 24,310 splits per partner) on the 2-core test machine


def descent(state: LayerState, deadline: float) -> None:
    """Repeatedly re-partition the hottest rank with a cooler one while that lowers the
    hottest rank: for S <= 9 every split of the 2S replicas into two sides of S is
    scored for all cooler ranks at once (coolest chunk first) and the best is taken;
    for larger S, single swaps with the coolest ranks first. Stops at ``deadline``."""
    if state.G < 2:
        return
    combos = _combos(state.S) if state.S <= 9 else None
    chunk = state.G if state.S <= 6 else 8
    if combos is not None:  # at most ~2M split scores at once (16 MB per array)
        chunk = max(1, min(chunk, (1 << 21) // len(combos[0])))
    while time.monotonic() < deadline:
        loads = state.loads()
        a = int(np.argmax(loads))
        order = np.argsort(loads, kind="stable")
        cooler = order[loads[order] < loads[a] * (1 - REL_TOL)].tolist()
        if combos is None:
            done = any(_repartition(state, a, b, loads[a], deadline) for b in cooler)
        else:
            done = any(_best_split(state, a, cooler[i:i + chunk], loads[a], combos, deadline)
                       for i in range(0, len(cooler), chunk))
        if not done:
            return


def _best_split(state: LayerState, a: int, partners: list[int], top: float, combos,
                deadline: float) -> bool:
    """The best re-partition of rank ``a`` with any of ``partners``; applied if it
    lowers ``top``. False, with the plan unchanged, once ``deadline`` passes."""
    inA, inA_f, moved = combos
    S = state.S
    Rb = state.R[partners]
    pe = np.concatenate([np.broadcast_to(state.R[a], Rb.shape), Rb], axis=1)
    pw = state.n[pe] / state.count[pe]
    sa = pw @ inA_f.T
    score = np.maximum(sa, pw.sum(axis=1, keepdims=True) - sa)
    shared = np.isin(Rb, state.R[a])
    check = shared.any(axis=1)
    if state.spec.spread_replicas:
        check |= state.node[partners] != state.node[a]
    flip: dict[int, np.ndarray] = {}
    for p in np.nonzero(check)[0]:
        if time.monotonic() >= deadline:
            return False
        b = partners[p]
        ok1 = ok2 = None
        for j in np.nonzero(shared[p])[0]:  # two replicas of one expert: one on each side
            i = int(np.nonzero(state.R[a] == Rb[p, j])[0][0])
            split = inA[:, i] != inA[:, S + j]
            ok1 = split if ok1 is None else ok1 & split
        ok2 = ok1
        movable = _movable(state, pe[p], a, b)
        if not movable.all():  # orientation 1: side A -> rank a; orientation 2: A -> b
            frozen = ~movable
            good1 = ~moved[:, frozen].any(axis=1)
            good2 = moved[:, frozen].all(axis=1)
            ok1 = good1 if ok1 is None else ok1 & good1
            ok2 = good2 if ok2 is None else ok2 & good2
        if ok1 is not None:
            score[p] = np.where(ok1 | ok2, score[p], np.inf)
            flip[p] = ~ok1
    p, k = np.unravel_index(int(np.argmin(score)), score.shape)
    if not score[p, k] < top * (1 - 1e-9):
        return False
    side = ~inA[k] if p in flip and flip[p][k] else inA[k]
    b = partners[p]
    state.R[a], state.R[b] = pe[p][side], pe[p][~side]
    return True


def _repartition(state: LayerState, a: int, b: int, top: float, deadline: float) -> bool:
    """Best single swap between ranks a and b (for S > 9); False once ``deadline`` passes."""
    pe = np.concatenate([state.R[a], state.R[b]])
    pw = state.n[pe] / state.count[pe]
    if time.monotonic() >= deadline:
        return False
    return _swap(state, a, b, pe, pw, _movable(state, pe, a, b), top, deadline)


def _swap(state: LayerState, a, b, pe, pw, movable, top, deadline: float) -> bool:
    """The single swap of item i (rank a) with item j (rank b) that most lowers the larger
    of the two loads below ``top``; ties go to the first pair in (i, j) order. Scored in
    blocks of about 2^20 pairs, checking ``deadline`` between blocks."""
    S = state.S
    la, lb = pw[:S].sum(), pw[S:].sum()
    rows = np.flatnonzero(movable[:S] & ~np.isin(pe[:S], pe[S:]))
    cols = S + np.flatnonzero(movable[S:] & ~np.isin(pe[S:], pe[:S]))
    if len(rows) == 0 or len(cols) == 0:
        return False
    best, pick = top * (1 - 1e-9), None
    block = max(1, (1 << 20) // len(cols))
    for first in range(0, len(rows), block):
        if time.monotonic() >= deadline:
            return False
        r = rows[first:first + block]
        d = pw[r][:, None] - pw[cols][None, :]
        worst = np.maximum(la - d, lb + d)
        k = int(np.argmin(worst))
        if worst.flat[k] < best:
            best, pick = worst.flat[k], (int(r[k // len(cols)]), int(cols[k % len(cols)]))
    if pick is None:
        return False
    i, j = pick
    state.R[a, i], state.R[b, j - S] = pe[j], pe[i]
    return True


def _movable(state: LayerState, pe: np.ndarray, a: int, b: int) -> np.ndarray:
    """May pool item i change rank (a <-> b) without two replicas on one node?"""
    out = np.ones(len(pe), dtype=bool)
    if not state.spec.spread_replicas or state.node[a] == state.node[b]:
        return out
    S = state.S
    for i, e in enumerate(pe):
        if state.count[e] < 2:
            continue
        dest = state.node[b] if i < S else state.node[a]
        src = a if i < S else b
        holders = np.nonzero((state.R == e).any(axis=1))[0]
        out[i] = not any(state.node[h] == dest and h not in (a, b) for h in holders if h != src)
    return out


def local_search(state: LayerState, deadline: float, max_stall: int = ILS_STALL,
                 max_tries: int | None = None) -> bool:
    """Iterated local search: perturb the best plan by one replica-count move (a
    replica of an expert with >= 2 replicas becomes a new replica of an expert on the
    hottest rank, or of a heavy expert), re-run the descent, keep the result if the
    (max load, ranks at max) pair improved. Without redundant slots the perturbation
    is a random swap with the hottest rank. Stops at the deadline, at the lower bound,
    after ``max_stall`` tries in a row without improvement, or after ``max_tries`` tries
    (deterministic); True if the deadline did."""
    best_R, best_count = state.R.copy(), state.count.copy()
    best_key = state.key(state.loads())
    stall, timed_out, tries = 0, False, 0
    while stall < max_stall and (max_tries is None or tries < max_tries):
        tries += 1
        if best_key[0] <= state.lower * (1 + REL_TOL):
            break
        if time.monotonic() >= deadline:
            timed_out = True
            break
        state.R, state.count = best_R.copy(), best_count.copy()
        moved = _count_move(state) if state.spec.redundant else _swap_move(state)
        if not moved:
            stall += 1
            continue
        descent(state, deadline)
        key = state.key(state.loads())
        if key < best_key:
            best_R, best_count, best_key, stall = state.R.copy(), state.count.copy(), key, 0
        else:
            stall += 1
    state.R, state.count = best_R, best_count
    return timed_out


def _count_move(state: LayerState) -> bool:
    """One replica of X (count >= 2) on rank h becomes a new replica of Y. Three kinds,
    drawn at random: (a) Y a heavy expert of the hottest rank (weighted by its replica
    load), X a donor whose other replicas grow least; (b) h the hottest rank, X one of
    its replicated experts, Y a light expert; (c) X, Y uniform."""
    rng = state.rng
    loads = state.loads()
    a = int(np.argmax(loads))
    per_replica = state.n / state.count
    multi = np.nonzero(state.count >= 2)[0]
    if len(multi) == 0:
        return False
    kind = rng.random()
    h = None
    if kind < 0.5:
        hot = [int(e) for e in state.R[a] if state.count[e] < state.cap]
        if not hot:
            return False
        y = rng.choices(hot, weights=[per_replica[e] + 1e-12 for e in hot])[0]
        cost = state.n[multi] / (state.count[multi] * (state.count[multi] - 1))
        x = int(rng.choices(list(multi), weights=list(1.0 / (cost + 1e-9 * state.mean + 1e-12)))[0])
    elif kind < 0.75:
        on_a = [int(e) for e in state.R[a] if state.count[e] >= 2]
        if not on_a:
            return False
        x, h = on_a[rng.randrange(len(on_a))], a
        light = np.argsort(state.n / (state.count + 1), kind="stable")
        light = [int(e) for e in light[:64] if e not in state.R[a] and state.count[e] < state.cap]
        if not light:
            return False
        y = light[rng.randrange(len(light))]
    else:
        y = rng.randrange(state.E)
        x = int(multi[rng.randrange(len(multi))])
    if x == y or state.count[y] >= state.cap:
        return False
    has_y = (state.R == y).any(axis=1)
    y_nodes = set(state.node[has_y].tolist()) if state.spec.spread_replicas else set()
    if h is None:
        hs = [g for g in range(state.G)
              if not has_y[g] and x in state.R[g] and int(state.node[g]) not in y_nodes]
        if not hs:
            return False
        h = min(hs, key=lambda g: loads[g]) if rng.random() < 0.5 else hs[rng.randrange(len(hs))]
    elif has_y[h] or int(state.node[h]) in y_nodes:
        return False
    state.R[h, int(np.nonzero(state.R[h] == x)[0][0])] = y
    state.count[x] -= 1
    state.count[y] += 1
    return True


def _swap_move(state: LayerState) -> bool:
    """Swap a random item of the hottest rank with a random item of another rank."""
    if state.G < 2:
        return False
    rng = state.rng
    a = int(np.argmax(state.loads()))
    b = rng.choice([g for g in range(state.G) if g != a])
    i, j = rng.randrange(state.S), rng.randrange(state.S)
    x, y = int(state.R[a, i]), int(state.R[b, j])
    if x == y or x in state.R[b] or y in state.R[a]:
        return False
    if state.spec.spread_replicas and state.node[a] != state.node[b] and (state.count[x] > 1 or state.count[y] > 1):
        return False
    state.R[a, i], state.R[b, j] = y, x
    return True


_COMBOS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _combos(S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ways to split 2S pool items (S from rank a, then S from rank b) into two sides
    of S, item 0 always on side A: (side A [C(2S-1,S-1)][2S] bool, the same as float, and
    "item changes rank when side A goes to rank a" bool)."""
    if S not in _COMBOS:
        from itertools import combinations
        rows = [(0,) + c for c in combinations(range(1, 2 * S), S - 1)]
        mask = np.zeros((len(rows), 2 * S), dtype=bool)
        mask[np.repeat(np.arange(len(rows)), S), np.array(rows).ravel()] = True
        origin_a = np.arange(2 * S) < S
        _COMBOS[S] = (mask, mask.astype(np.float64), mask != origin_a)
    return _COMBOS[S]

