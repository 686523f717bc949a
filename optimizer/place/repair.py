"""A plan near the current one whose hottest rank meets a target: the starting point of the
migration model (``migrate``) on layers too large for CP-SAT to find few-move plans alone.

1. Replica counts become ``count`` (those of the from-scratch plan, known to admit the
   target): surplus replicas leave the hottest ranks holding them; missing ones go,
   heaviest first, to the least-loaded rank with a free slot that may hold them.
2. Large-neighbourhood repair: while some rank exceeds the target, the hottest rank and
   the ``k`` coolest ranks are re-assigned by a small CP-SAT model (their replicas only;
   every rank of the group within the target; fewest pairs absent from the current plan);
   ``k`` doubles when the group cannot meet the target (each model gets
   ``STEP_DETERMINISTIC_S`` of CP-SAT's deterministic time per 4 ranks, so the steps repeat). Each step ends with every group
   rank within the target, so the number of ranks above it falls: at most G steps.
Returns None when step 1 cannot place a replica or the time runs out.
"""

from __future__ import annotations

import math
import time

import numpy as np
from ortools.sat.python import cp_model

from optimizer.place.exact import new_solver
from optimizer.place.problem import PlaceSpec

GROUP_START = 3              # cool ranks joined to the hottest one in the first try
SWAP_STEPS_PER_RANK = 8      # exchanges (``_swap``) tried per rank before only CP-SAT re-assigns
STEP_DETERMINISTIC_S = 0.1   # CP-SAT deterministic seconds per re-assignment of 4 ranks (best plan found
                             # by then is taken; none found counts as "cannot meet the target")


def repair(n: np.ndarray, current: np.ndarray, count: np.ndarray, spec: PlaceSpec, target: float,
           deadline: float, seed: int = 0, start: np.ndarray | None = None) -> np.ndarray | None:
    """[G][S] plan with replica counts ``count`` ([E]) and max load <= ``target`` (tokens),
    built from ``start`` (default ``current``, [G][S]) with few (expert, rank) pairs that
    ``current`` lacks; see the module doc."""
    plan = _recount(n.astype(np.float64), current if start is None else start, count, spec)
    if plan is None:
        return None
    weight = n.astype(np.float64) / count
    held = {(int(e), g) for g in range(len(current)) for e in current[g]}
    was_held = np.zeros((len(n), len(current)), dtype=bool)   # [E][G]: current holds (e, g)
    was_held[current, np.arange(len(current))[:, None]] = True
    k = GROUP_START
    swaps = 0
    while time.monotonic() < deadline:
        loads = weight[plan].sum(axis=1)
        a = int(np.argmax(loads))
        if loads[a] <= target * (1 + 1e-12):
            if not spec.spread_replicas:
                _fewer_moves(plan, weight, target, was_held, deadline)
            return plan
        if not spec.spread_replicas and swaps < SWAP_STEPS_PER_RANK * len(plan) and \
                _swap(plan, weight, loads, a, target, was_held):
            swaps += 1
            continue
        cool = [int(g) for g in np.argsort(loads, kind="stable") if g != a][:k]
        group = [a] + cool
        new_rows = _regroup(plan, group, n, count, spec, target, held, deadline, seed)
        if new_rows is None:
            if k >= spec.num_ranks - 1:
                return None
            k = min(2 * k, spec.num_ranks - 1)
            continue
        plan[group] = new_rows
    return None


def _swap(plan: np.ndarray, weight: np.ndarray, loads: np.ndarray, a: int, target: float,
          was_held: np.ndarray) -> bool:
    """One exchange of a replica of the hottest rank ``a`` with one of another rank ``b``
    (in place), keeping ``b`` within ``target`` and the replicas of an expert on distinct
    ranks: one that brings ``a`` within ``target`` at the fewest new (expert, rank) pairs
    (``was_held`` [E][G]: the current plan's pairs cost nothing), then the lowest pair
    maximum; else the one lowering the pair maximum most. False when no exchange lowers it."""
    G, S = plan.shape
    wa = weight[plan[a]]                                        # [S]
    delta = wa[None, :, None] - weight[plan][:, None, :]       # [G][S (from a)][S (from b)]
    new_a, new_b = loads[a] - delta, loads[:, None, None] + delta
    on_rank = np.zeros((G, weight.shape[0]), dtype=bool)
    on_rank[np.arange(G)[:, None], plan] = True
    ok = (new_b <= target * (1 + 1e-12)) & (np.maximum(new_a, new_b) < loads[a] * (1 - 1e-12))
    ok &= ~on_rank[:, plan[a]][:, :, None]                     # e (from a) not on b already
    ok &= ~on_rank[a][plan][:, None, :]                        # f (from b) not on a already
    ok[a] = False
    if not ok.any():
        return False
    cost = (~was_held[plan[a]].T)[:, :, None].astype(np.int64) + (~was_held[plan, a])[:, None, :]
    peak = np.maximum(new_a, new_b)
    within = ok & (new_a <= target * (1 + 1e-12))
    if within.any():
        key = np.where(within, cost * 4.0 * loads[a] + peak, np.inf)
    else:
        key = np.where(ok, peak, np.inf)
    b, i, j = np.unravel_index(int(np.argmin(key)), key.shape)
    plan[a, i], plan[b, j] = plan[b, j], plan[a, i]
    return True


def _fewer_moves(plan: np.ndarray, weight: np.ndarray, target: float, was_held: np.ndarray,
                 deadline: float) -> None:
    """Exchanges of two replicas between two ranks (in place) that lower the number of new
    (expert, rank) pairs while both ranks stay within ``target`` and an expert's replicas on
    distinct ranks: the largest saving first (then the lowest pair maximum), until none is
    left or ``deadline``. Every step saves at least one move, so at most G*S steps."""
    G, S = plan.shape
    rank = np.arange(G)
    limit = target * (1 + 1e-12)
    while time.monotonic() < deadline:
        w = weight[plan]                                           # [G][S]
        loads = w.sum(axis=1)
        fresh = ~was_held[plan, rank[:, None]]                     # [G][S] pair not in current
        on_rank = np.zeros((G, weight.shape[0]), dtype=bool)
        on_rank[rank[:, None], plan] = True
        # item (b, i) goes to rank c and item (c, j) to rank b; arrays [G b][S i][G c][S j]
        delta = w[:, :, None, None] - w[None, None, :, :]
        new_b = loads[:, None, None, None] - delta
        new_c = loads[None, None, :, None] + delta
        fresh_at = ~was_held[plan]                                 # [G][S][G r]: (plan[g, s], r) fresh
        saving = (fresh[:, :, None, None].astype(np.int64) + fresh[None, None, :, :]
                  - fresh_at[:, :, :, None] - np.transpose(fresh_at, (2, 0, 1))[:, None, :, :])
        ok = (saving > 0) & (new_b <= limit) & (new_c <= limit)
        holds = on_rank.T[plan]                                    # [G][S][G r]: rank r holds plan[g, s]
        ok &= ~holds[:, :, :, None]                                # e (from b) not on c already
        ok &= ~np.transpose(holds, (2, 0, 1))[:, None, :, :]       # f (from c) not on b already
        ok[rank, :, rank, :] = False
        if not ok.any():
            return
        key = np.where(ok, -saving * 4.0 * limit + np.maximum(new_b, new_c), np.inf)
        b, i, c, j = np.unravel_index(int(np.argmin(key)), key.shape)
        plan[b, i], plan[c, j] = plan[c, j], plan[b, i]


def _recount(n: np.ndarray, current: np.ndarray, count: np.ndarray, spec: PlaceSpec) -> np.ndarray | None:
    """``current`` changed to the replica counts ``count`` (step 1), or None."""
    G = len(current)
    per = G // spec.num_nodes
    have = np.bincount(current.ravel(), minlength=len(n))
    plan = current.copy()
    loads = (n[plan] / have[plan]).sum(axis=1)
    free: list[tuple[int, int]] = []            # (rank, slot) emptied
    for e in np.nonzero(have > count)[0]:
        holders = sorted(np.nonzero((plan == e).any(axis=1))[0], key=lambda g: -loads[g])
        for g in holders[: int(have[e] - count[e])]:
            free.append((int(g), int(np.nonzero(plan[g] == e)[0][0])))
            plan[g, free[-1][1]] = -1
    weight = n / count
    loads = np.where(plan >= 0, weight[np.maximum(plan, 0)], 0.0).sum(axis=1)
    need = [(weight[e], int(e)) for e in np.nonzero(have < count)[0] for _ in range(int(count[e] - have[e]))]
    for _, e in sorted(need, key=lambda it: (-it[0], it[1])):
        holders = set(np.nonzero((plan == e).any(axis=1))[0].tolist())
        nodes = {g // per for g in holders} if spec.spread_replicas else set()
        options = [(loads[g], g, s) for g, s in free if g not in holders and g // per not in nodes]
        if not options:
            return None
        _, g, s = min(options)
        free.remove((g, s))
        plan[g, s] = e
        loads[g] += weight[e]
    return plan


def _regroup(plan, group, n, count, spec: PlaceSpec, target, held, deadline, seed):
    """[len(group)][S] new rows for the ranks ``group``: their replicas re-assigned, each
    rank's load <= target, fewest pairs not in ``held``; None if infeasible or out of time."""
    limit = deadline - time.monotonic()
    if limit <= 0.01:
        return None
    G, S = len(plan), plan.shape[1]
    per = G // spec.num_nodes
    items = sorted({int(e) for g in group for e in plan[g]})
    lcm = math.lcm(*{int(count[e]) for e in items})
    exact = int(n.max()) * lcm <= 1 << 40
    scale = lcm if exact else (1 << 30) / max(float(n.max()), 1.0)
    w = {e: (int(n[e]) * lcm // int(count[e]) if exact else math.ceil(float(n[e]) * scale / count[e]))
         for e in items}
    cap_int = math.floor(target * scale * (1 + 1e-12)) if not exact else math.floor(target * lcm + 1e-6)
    copies = {e: sum(int((plan[g] == e).any()) for g in group) for e in items}
    outside_nodes = {}
    if spec.spread_replicas:
        in_group = set(group)
        for e in items:
            outside_nodes[e] = {g // per for g in np.nonzero((plan == e).any(axis=1))[0] if g not in in_group}
    m = cp_model.CpModel()
    x = {}
    for e in items:
        for g in group:
            if spec.spread_replicas and g // per in outside_nodes[e]:
                continue
            x[e, g] = m.new_bool_var(f"x[{e},{g}]")
            m.add_hint(x[e, g], bool((plan[g] == e).any()))
        m.add(sum(x[e, g] for g in group if (e, g) in x) == copies[e])
        if spec.spread_replicas:
            for node in {g // per for g in group}:
                lits = [x[e, g] for g in group if g // per == node and (e, g) in x]
                if len(lits) > 1:
                    m.add_at_most_one(lits)
    for g in group:
        m.add(sum(x[e, g] for e in items if (e, g) in x) == S)
        m.add(sum(w[e] * x[e, g] for e in items if (e, g) in x) <= cap_int)
    m.maximize(sum(v for (e, g), v in x.items() if (e, g) in held))
    solver = new_solver(limit, 1, seed, STEP_DETERMINISTIC_S * len(group) / (GROUP_START + 1))
    status = solver.solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    rows = np.array([sorted(e for e in items if (e, g) in x and solver.boolean_value(x[e, g]))
                     for g in group], dtype=np.int64)
    real = (n[rows] / count[rows]).sum(axis=1)
    return rows if real.max() <= target * (1 + 1e-12) else None
