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
    k = GROUP_START
    while time.monotonic() < deadline:
        loads = weight[plan].sum(axis=1)
        a = int(np.argmax(loads))
        if loads[a] <= target * (1 + 1e-12):
            return plan
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
