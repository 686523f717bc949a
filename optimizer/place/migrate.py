"""Rebalancing with migration cost (``moeopt place --current``): the plan closest to the
placement in service whose hottest rank stays within a tolerance of the best balance.

Per layer, given the current plan ``C`` ([G][S] expert ids) and the best max load ``M``
found from scratch (``run.solve_layer``), the target is ``T = M * (1 + tolerance)``.
A *move* is a pair (expert e, rank g) of the new plan that ``C`` lacks: rank g must copy
e's weights (one expert's bytes). Kept pairs cost nothing; replicas dropped cost nothing.

CP-SAT model (linear, integer, the same variables as ``exact``):
- ``y[e,c]``: expert e gets c replicas (one-hot over ``[lo_e, hi_e]``, ``lo_e = ceil(n_e/T)``
  since one replica carries ``n_e / c <= T``); ``sum_c c*y[e,c] = E + R``.
- ``z[e,g,c]``: rank g holds e and e has c replicas; ``sum_g z[e,g,c] = c * y[e,c]``, at
  most one c per (e, g); every rank holds S; with ``spread_replicas`` one per node.
- Load: ``sum_{e,c} w[e,c] z[e,g,c] <= T_int`` with exact integer weights
  ``w = n_e * L / c`` (``L`` the lcm of the counts), ``T_int = floor(hint max * (1 + tol))``
  in the same units, so the constraint is exact; when ``n * L`` is too large the weights are
  rounded up (every accepted plan still meets T; a few plans at the edge are excluded).
- Objective ``moves``: maximize kept pairs ``sum_{(e,g) in C} z[e,g,.]`` (moves = E + R -
  kept). Objective ``inter-node``: minimize ``(S*G + 1) * inter + moves`` where a move is
  inter-node when no rank of g's node holds e in ``C``.
- Hint: the cheaper of the from-scratch plan with its ranks relabelled to overlap ``C`` most
  (relabelling ranks keeps every load) and the repaired current plan (``repair``: the
  from-scratch replica counts, then small CP-SAT re-assignments of the hottest rank with
  the coolest ones, meeting the looser tolerances of ``LADDER`` first); the answer never
  costs more than the hint, hence than from scratch.
Large layers (more than ``MIGRATE_MAX_LITERALS`` literals) restrict each expert's replica
count to the from-scratch plan's and the hint's; the minimum is then over those counts.

Budget: CP-SAT's ``max_deterministic_time`` (reproducible for a fixed seed and one worker)
with the wall-clock deadline as the hard stop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from optimizer.place.exact import new_solver
from optimizer.place.problem import PlaceSpec
from optimizer.place.repair import repair

MIGRATE_MAX_LITERALS = 120_000  # above this the replica counts are fixed to the hint's
EXACT_WEIGHT_LIMIT = 1 << 40    # exact weights n * lcm / c up to this (sums of S stay < 2^62)
ROUNDED_SCALE = 1 << 30         # rounded-up weights: the heaviest replica becomes ~2^30
LADDER = (0.01, 0.005, 0.002, 0.001)  # tolerances the repair meets in turn on its way down
REPAIR_SHARE = 0.8              # of the layer's time for the repair heuristic (``repair``), the
                                # engine on large layers (the full model rarely improves on it)


@dataclass
class MigrationResult:
    """One layer's rebalanced plan and what it costs to reach it from the current one."""

    ranks: np.ndarray          # [G][S] expert ids
    moves: int                 # (expert, rank) pairs to copy
    inter_node_moves: int      # of those, copies whose node holds no replica of the expert now
    scratch_moves: int         # moves of the from-scratch plan (best rank relabelling)
    max_load: float
    current_max_load: float
    target_max_load: float
    proven: bool               # CP-SAT proved the minimum (over the model's replica counts)
    counts_fixed: bool = False  # large layer: replica counts fixed to the from-scratch plan's


def rank_loads(n: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """[G] tokens per rank; replicas counted from ``ranks`` ([G][S] expert ids)."""
    count = np.bincount(ranks.ravel(), minlength=len(n))
    return (n[ranks] / count[ranks]).sum(axis=1)


def count_moves(plan: np.ndarray, current: np.ndarray, node: np.ndarray | None = None) -> tuple[int, int]:
    """(moves, inter-node moves) from ``current`` to ``plan`` (both [G][S])."""
    held = {(int(e), g) for g in range(len(current)) for e in current[g]}
    on_node = set()
    if node is not None:
        on_node = {(int(e), int(node[g])) for g in range(len(current)) for e in current[g]}
    moves = inter = 0
    for g in range(len(plan)):
        for e in plan[g]:
            if (int(e), g) not in held:
                moves += 1
                inter += node is not None and (int(e), int(node[g])) not in on_node
    return moves, inter


def relabel(plan: np.ndarray, current: np.ndarray, spec: PlaceSpec) -> np.ndarray:
    """``plan`` with its ranks permuted to share the most (expert, rank) pairs with
    ``current`` (greedy on the overlap matrix, largest overlap first). Loads do not change;
    with ``spread_replicas`` over several nodes the plan is returned unpermuted (a rank
    permutation could put two replicas on one node)."""
    if spec.spread_replicas and spec.num_nodes > 1:
        return plan.copy()
    G, E = len(plan), int(max(plan.max(), current.max())) + 1
    a = np.zeros((G, E), dtype=np.int32)
    b = np.zeros((G, E), dtype=np.int32)
    np.put_along_axis(a, plan, 1, axis=1)
    np.put_along_axis(b, current, 1, axis=1)
    overlap = a @ b.T                           # [new rank][old rank]
    order = np.argsort(-overlap, axis=None, kind="stable")
    target = np.full(G, -1)
    used = np.zeros(G, dtype=bool)
    for k in order:
        i, j = divmod(int(k), G)
        if target[i] < 0 and not used[j]:
            target[i], used[j] = j, True
    out = np.empty_like(plan)
    out[target] = plan
    return out


def migrate_layer(n: np.ndarray, current: np.ndarray, best: np.ndarray, spec: PlaceSpec,
                  tolerance: float, objective: str, deadline: float, workers: int = 1,
                  seed: int = 0, deterministic_s: float | None = None) -> MigrationResult:
    """The plan with the fewest moves from ``current`` whose max load is at most
    ``max load of best * (1 + tolerance)``. ``n``: [E] int tokens; ``current``, ``best``:
    [G][S] expert ids; ``objective``: "moves" or "inter-node"."""
    n = np.asarray(n, dtype=np.int64)
    nf = n.astype(np.float64)
    G = spec.num_ranks
    node = np.arange(G) // (G // spec.num_nodes)
    best_max = float(rank_loads(nf, best).max())
    target = best_max * (1 + tolerance)
    current_max = float(rank_loads(nf, current).max())
    hint = relabel(best, current, spec)
    scratch = count_moves(hint, current, node)[0]

    def result(plan, proven, fixed=False):
        moves, inter = count_moves(plan, current, node)
        return MigrationResult(plan, moves, inter, scratch, float(rank_loads(nf, plan).max()),
                               current_max, target, proven, fixed)

    if current_max <= target * (1 + 1e-12):
        return result(current.copy(), True)   # no move needed
    start = time.monotonic()
    repair_end = start + REPAIR_SHARE * (deadline - start)
    have = np.bincount(current.ravel(), minlength=len(n))
    options = [nearest_counts(nf, have, target, spec.max_replicas()), np.bincount(best.ravel(), minlength=len(n))]
    tries = [(counts, ladder) for ladder in (False, True) for counts in options if counts is not None]
    for k, (counts, ladder) in enumerate(tries):  # current counts first, straight to T first
        end = start + (k + 1) / len(tries) * (repair_end - start)
        near = (_repair_ladder(n, current, counts, spec, best_max, tolerance, end, seed) if ladder
                else repair(n, current, counts, spec, target, end, seed))
        if near is not None and _cost(near, current, node, objective) < _cost(hint, current, node, objective):
            hint = near
    model = _Model(n, current, hint, best, spec, tolerance, objective, node)
    limit = deadline - time.monotonic()
    fixed = model.counts_fixed
    if limit <= 0.01:
        return result(hint, False, fixed)
    solver = new_solver(limit, workers, seed)
    if deterministic_s is not None:
        solver.parameters.max_deterministic_time = max(deterministic_s, 0.01)
    status = solver.solve(model.model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return result(hint, False, fixed)
    plan = model.read(solver)
    proven = status == cp_model.OPTIMAL and model.exact
    if rank_loads(nf, plan).max() > target * (1 + 1e-12) or \
            _cost(plan, current, node, objective) > _cost(hint, current, node, objective):
        return result(hint, False, fixed)   # rounded weights let an edge plan through, or no gain
    return result(plan, proven, fixed)


def nearest_counts(n: np.ndarray, have: np.ndarray, target: float, cap: int) -> np.ndarray | None:
    """[E] replica counts closest to ``have`` (the current ones) under which no single
    replica exceeds ``target``: every expert with ``n[e] / have[e] > target`` gets the
    replicas it needs (``ceil(n[e] / target)``), each taken from the expert that can spare
    one at the least per-replica load afterwards (``n[f] / (have[f] - 1)``, ties: lower id).
    None when ``cap`` or the slots cannot provide them. Each changed count costs at least
    one move, so these counts keep most of the current plan."""
    count = have.astype(np.int64).copy()
    need = np.maximum(1, np.ceil(n / target * (1 - 1e-12)).astype(np.int64)) if target > 0 else np.ones_like(count)
    if (need > cap).any():
        return None
    for e in np.flatnonzero(count < need):
        for _ in range(int(need[e] - count[e])):
            spare = np.flatnonzero((count > need) & (count > 1))
            if len(spare) == 0:
                return None
            after = n[spare] / (count[spare] - 1)
            f = int(spare[int(np.argmin(after))])
            count[f] -= 1
            count[e] += 1
    return count


def _repair_ladder(n, current, count, spec, best_max, tolerance, deadline, seed):
    """``repair`` towards ``best_max * (1 + tolerance)`` through the looser targets of
    ``LADDER`` first, each step starting from the previous plan (a near-balanced plan is
    easier to tighten than the current one); None unless the last target is met."""
    plan = None
    for tol in [t for t in LADDER if t > tolerance] + [tolerance]:
        plan = repair(n, current, count, spec, best_max * (1 + tol), deadline, seed, start=plan)
        if plan is None:
            return None
    return plan


def _cost(plan, current, node, objective) -> int:
    """The model's objective for ``plan``: moves, or ``moves + (G*S + 1) * inter-node moves``."""
    moves, inter = count_moves(plan, current, node)
    return moves if objective == "moves" else moves + (plan.size + 1) * inter


class _Model:
    """The CP-SAT model of the module doc; ``read`` turns a solution into [G][S] ids."""

    def __init__(self, n, current, hint, best, spec: PlaceSpec, tolerance, objective, node):
        E, G = len(n), spec.num_ranks
        S = spec.slots_per_rank(E)
        cap = spec.max_replicas()
        hint_count = np.bincount(hint.ravel(), minlength=E)
        best_count = np.bincount(best.ravel(), minlength=E)
        best_max = float(rank_loads(n.astype(np.float64), best).max())
        target = best_max * (1 + tolerance)
        lo = [max(1, math.ceil(x / target * (1 - 1e-12))) if target > 0 else 1 for x in n]
        slack = E + spec.redundant - sum(lo)
        doms = [list(range(l, min(cap, l + slack) + 1)) for l in lo]
        for e in range(E):                    # float edge: keep the hint and best admissible
            doms[e] = sorted(set(doms[e]) | {int(hint_count[e]), int(best_count[e])})
        self.counts_fixed = sum(len(d) for d in doms) * G > MIGRATE_MAX_LITERALS
        if self.counts_fixed:
            doms = [sorted({int(hint_count[e]), int(best_count[e])}) for e in range(E)]
        self.literals = sum(len(d) for d in doms) * G
        lcm = math.lcm(*{c for d in doms for c in d})
        self.exact = int(n.max()) * lcm <= EXACT_WEIGHT_LIMIT
        if self.exact:
            weight = {(e, c): int(n[e]) * lcm // c for e in range(E) for c in doms[e]}
        else:
            scale = ROUNDED_SCALE / max(float(n.max()), 1.0)
            weight = {(e, c): math.ceil(float(n[e]) * scale / c) for e in range(E) for c in doms[e]}
        hint_int = max(sum(weight[int(e), int(hint_count[e])] for e in row) for row in hint)
        best_int = max(sum(weight[int(e), int(best_count[e])] for e in row) for row in best)
        cap_int = max(hint_int, math.floor(best_int * (1 + tolerance)))
        if not self.exact:
            cap_int = max(hint_int, math.floor(target * scale))
        m = cp_model.CpModel()
        self.model, self.G, self.S = m, G, S
        self.z: dict[tuple[int, int, int], cp_model.IntVar] = {}
        held = {}                       # (e, g) -> literals of "g holds e"
        on_rank = [[] for _ in range(G)]
        on_node: dict[tuple[int, int], list] = {}
        count_terms = []
        for e in range(E):
            ys = {c: m.new_bool_var(f"r[{e}]={c}") for c in doms[e]}
            m.add_exactly_one(ys.values())
            for c, yv in ys.items():
                count_terms.append(c * yv)
                m.add_hint(yv, c == hint_count[e])
                lits = []
                for g in range(G):
                    v = m.new_bool_var(f"z[{e},{g},{c}]")
                    self.z[e, g, c] = v
                    lits.append(v)
                    held.setdefault((e, g), []).append(v)
                    on_rank[g].append((weight[e, c], v))
                    on_node.setdefault((e, int(node[g])), []).append(v)
                m.add(sum(lits) == c * yv)
        for lits in held.values():
            if len(lits) > 1:
                m.add_at_most_one(lits)
        m.add(sum(count_terms) == E + spec.redundant)
        if spec.spread_replicas:
            for lits in on_node.values():
                if len(lits) > 1:
                    m.add(sum(lits) <= 1)
        for g in range(G):
            m.add(sum(v for _, v in on_rank[g]) == S)
            m.add(sum(w * v for w, v in on_rank[g]) <= cap_int)
        in_hint = {(int(e), g) for g in range(G) for e in hint[g]}
        for (e, g, c), v in self.z.items():
            m.add_hint(v, (e, g) in in_hint and c == hint_count[e])
        kept = [v for g in range(G) for e in current[g] for v in held[int(e), g]]
        if objective == "moves":
            m.maximize(sum(kept))
        else:
            cur_nodes = {(int(e), int(node[g])) for g in range(G) for e in current[g]}
            cur_pairs = {(int(e), g) for g in range(G) for e in current[g]}
            big = G * S + 1       # one inter-node move outweighs every intra-node one
            terms = [(big + 1 if (e, int(node[g])) not in cur_nodes else 1) * v
                     for (e, g, c), v in self.z.items() if (e, g) not in cur_pairs]
            m.minimize(sum(terms))

    def read(self, solver) -> np.ndarray:
        rows = [[] for _ in range(self.G)]
        for (e, g, _), v in self.z.items():
            if solver.boolean_value(v):
                rows[g].append(e)
        return np.array([sorted(r) for r in rows], dtype=np.int64)
