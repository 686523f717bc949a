"""The exact CP-SAT model of one layer (used when it is small, ``EXACT_MAX_LITERALS``).

Phase 1, min-max placement: replica counts are variables (one-hot ``r[e] = c`` over
``[lo, hi]``, where ``lo = ceil(n/UB)`` for the incumbent's max load UB); ``z[e,g,c]`` =
"rank g holds a replica of e and e has c replicas" makes the per-replica load ``n/c``
linear; symmetry breaking (nodes, and ranks inside a node, numbered by first use,
heaviest expert first) and the incumbent as a complete hint; exact integer weights
(``n * lcm / c``), so OPTIMAL is a proof for the real loads (with rounded-up weights the
bound is lowered by S units, so it stays a bound on the real loads).
Phase 2 (nodes and replicas): keeps the max load and maximizes node coverage
``sum n[e] h[e]``, i.e. minimizes the tokens that cross nodes.
"""

from __future__ import annotations

import math
import time

import numpy as np
from ortools.sat.python import cp_model

from optimizer.place.layer_state import SCALE, LayerState

EXACT_MAX_LITERALS = 6000    # exact model when its assignment literals stay below this
EXACT_MAX_WEIGHT = 10**9     # exact integer weights up to this, else rounded up (bound kept sound)
EXACT_S_PER_LITERAL = 5e-5   # a layer's budget must allow this per literal: building and
                             # presolving ~4000 literals takes ~0.12 s before any search


def new_solver(limit_s: float, workers: int, seed: int,
               deterministic_s: float | None = None) -> cp_model.CpSolver:
    """A CP-SAT solver with a time limit (at least 10 ms), workers and seed, and when given
    a deterministic time limit (CP-SAT's work units: reproducible with one worker)."""
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(limit_s, 0.01)
    if deterministic_s is not None:
        solver.parameters.max_deterministic_time = max(deterministic_s, 0.001)
    solver.parameters.num_workers = max(1, workers)
    solver.parameters.random_seed = seed % (1 << 31)
    return solver


def _domains(state: LayerState, ub: float) -> tuple[list[range], list[int]]:
    """Replica-count domains [lo, hi] valid for every plan with max load <= ub, and
    the symmetry order (heaviest first)."""
    lo = [max(1, math.ceil(x / ub * (1 - 1e-12))) if ub > 0 else 1 for x in state.n]
    slack = state.E + state.spec.redundant - sum(lo)
    doms = [range(l, min(state.cap, l + slack) + 1) for l in lo]
    order = sorted(range(state.E), key=lambda e: (-state.ni[e], e))
    return doms, order


def _allowed(state: LayerState, doms, order) -> dict[int, list[int]]:
    """Symmetry breaking: relabel nodes, and ranks inside a node, by first use when the
    experts are scanned heaviest first; then the i-th expert can only use nodes and
    local ranks below the largest number of replicas the first i experts can have."""
    per = state.G // state.K
    allowed, cum = {}, 0
    for e in order:
        cum += doms[e][-1]
        allowed[e] = [g for g in range(state.G) if g // per < cum and g % per < cum]
    return allowed


def exact_size(state: LayerState) -> int:
    """Assignment literals of the exact model, counted without building it: expert ``e``
    may use ``min(K, cum) * min(G/K, cum)`` ranks (``_allowed``). Exact up to
    ``EXACT_MAX_LITERALS``; above it, some number above it (every expert has a literal)."""
    if state.E > EXACT_MAX_LITERALS:
        return state.E
    doms, order = _domains(state, state.max_load())
    per, size, cum = state.G // state.K, 0, 0
    for e in order:
        cum += doms[e][-1]
        size += len(doms[e]) * min(state.K, cum) * min(per, cum)
    return size


def solve_exact(state: LayerState, deadline: float, workers: int) -> tuple[bool, float, bool]:
    """Solve the layer's full model; returns (proved optimal, CP-SAT bound in tokens,
    the time limit stopped phase 1 before a proof)."""
    ub = state.max_load()
    doms, order = _domains(state, ub)
    allowed = _allowed(state, doms, order)
    lcm = math.lcm(*{c for d in doms for c in d})
    if int(state.ni.max()) * lcm <= EXACT_MAX_WEIGHT:
        scale, slack = lcm, 0      # weights n*lcm/c are exact integers
        weight = {(e, c): int(state.ni[e]) * lcm // c for e in range(state.E) for c in doms[e]}
    else:                          # rounded up: the real max >= (model max - S) / scale
        scale, slack = SCALE / float(state.n.max()), state.S
        weight = {(e, c): math.ceil(state.n[e] * scale / c) for e in range(state.E) for c in doms[e]}
    hint_R = _canonical(state, order)
    model = cp_model.CpModel()
    z, y = {}, {}
    on_rank = [[] for _ in range(state.G)]
    on_node: dict[tuple[int, int], list] = {}
    for e in range(state.E):
        choices = {c: (model.new_bool_var(f"r[{e}]={c}") if len(doms[e]) > 1 else 1) for c in doms[e]}
        y[e] = choices
        if len(doms[e]) > 1:
            model.add_exactly_one(choices.values())
        per_rank = {g: [] for g in allowed[e]}
        for c in doms[e]:
            lits = []
            for g in allowed[e]:
                v = model.new_bool_var(f"z[{e},{g},{c}]")
                z[e, g, c] = v
                lits.append(v)
                per_rank[g].append(v)
                on_rank[g].append((weight[e, c], v))
                on_node.setdefault((e, int(state.node[g])), []).append(v)
                if len(doms[e]) > 1:
                    model.add_implication(v, choices[c])
            model.add(sum(lits) == c * choices[c])
        for lits in per_rank.values():
            if len(lits) > 1:
                model.add_at_most_one(lits)
    model.add(sum(c * (v if not isinstance(v, int) else 1) for e in range(state.E)
                  for c, v in y[e].items()) == state.E + state.spec.redundant)
    if state.spec.spread_replicas:
        for lits in on_node.values():
            if len(lits) > 1:
                model.add(sum(lits) <= 1)
    ub_int = max(sum(weight[int(e), int(state.count[e])] for e in row) for row in hint_R)
    top = model.new_int_var(0, int(ub_int), "max_load")
    for g in range(state.G):
        model.add(sum(v for _, v in on_rank[g]) == state.S)
        model.add(sum(int(w) * v for w, v in on_rank[g]) <= top)
    model.minimize(top)
    held = {(e, int(g)) for g in range(state.G) for e in hint_R[g]}
    for (e, g, c), v in z.items():
        model.add_hint(v, (e, g) in held and c == state.count[e])
    for e, choices in y.items():
        for c, v in choices.items():
            if not isinstance(v, int):
                model.add_hint(v, c == state.count[e])
    model.add_hint(top, int(ub_int))
    two_phase = state.K > 1 and state.spec.redundant > 0
    budget = deadline - time.monotonic()
    solver = new_solver(0.75 * budget if two_phase else budget, workers, state.seed, state.effort)
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return False, 0.0, status == cp_model.UNKNOWN
    proven = status == cp_model.OPTIMAL and slack == 0
    bound = (solver.best_objective_bound - slack) / scale
    sol = _read(state, solver, z, y)
    if state.key(state.loads(*sol)) <= state.key(state.loads()):
        state.R, state.count = sol
    if two_phase:
        _exact_phase2(state, model, solver, z, y, top, on_node, deadline, workers)
    return proven, bound, status != cp_model.OPTIMAL


def _exact_phase2(state: LayerState, model, solver, z, y, top, on_node, deadline, workers) -> None:
    """Keep the max load, maximize node coverage sum_e n_e * (nodes holding e)."""
    best = int(solver.value(top))
    values = {k: solver.boolean_value(v) for k, v in z.items()}
    model.clear_hints()
    for k, v in z.items():
        model.add_hint(v, values[k])
    for choices in y.values():
        for v in choices.values():
            if not isinstance(v, int):
                model.add_hint(v, solver.boolean_value(v))
    model.add(top <= best)
    model.add_hint(top, best)
    covered = {(e, int(state.node[g])) for (e, g, _), v in values.items() if v}
    weight = state.coverage_weights()
    terms = []
    for (e, k), lits in on_node.items():
        if weight[e] == 0 or max(c for c in y[e]) < 2:
            continue
        u = model.new_bool_var(f"covers[{e},{k}]")
        model.add(u <= sum(lits))
        model.add_hint(u, (e, k) in covered)
        terms.append((weight[e], u))
    if not terms:
        return
    model.maximize(sum(w * u for w, u in terms))
    solver2 = new_solver(deadline - time.monotonic(), workers, state.seed, state.effort)
    status = solver2.solve(model)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        sol = _read(state, solver2, z, y)
        if state.key(state.loads(*sol))[0] <= state.max_load() * (1 + 1e-9):
            state.R, state.count = sol


def _read(state: LayerState, solver, z, y) -> tuple[np.ndarray, np.ndarray]:
    rows = [[] for _ in range(state.G)]
    count = np.zeros(state.E, dtype=np.int64)
    for (e, g, _c), v in z.items():
        if solver.boolean_value(v):
            rows[g].append(e)
            count[e] += 1
    return np.array(rows, dtype=np.int64), count


def _canonical(state: LayerState, order: list[int]) -> np.ndarray:
    """The current plan with nodes, and ranks within nodes, relabelled by first use in
    ``order`` (the form the symmetry breaking of ``_allowed`` admits)."""
    per = state.G // state.K
    node_label: dict[int, int] = {}
    local_next = [0] * state.K
    rank_label: dict[int, int] = {}
    holders: dict[int, list[int]] = {}
    for g in range(state.G):
        for e in state.R[g]:
            holders.setdefault(int(e), []).append(g)
    for e in order:
        for g in holders.get(e, []):
            if g in rank_label:
                continue
            k = int(state.node[g])
            if k not in node_label:
                node_label[k] = len(node_label)
            nk = node_label[k]
            rank_label[g] = nk * per + local_next[nk]
            local_next[nk] += 1
    for g in range(state.G):  # ranks holding nothing new (cannot happen: S >= 1)
        if g not in rank_label:
            k = int(state.node[g])
            if k not in node_label:
                node_label[k] = len(node_label)
            nk = node_label[k]
            rank_label[g] = nk * per + local_next[nk]
            local_next[nk] += 1
    out = np.empty_like(state.R)
    for g, ng in rank_label.items():
        out[ng] = state.R[g]
    state.R = out
    return out
