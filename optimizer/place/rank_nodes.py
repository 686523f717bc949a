"""The secondary objective for large layers: whole ranks assigned to nodes by CP-SAT.

Moving a whole rank keeps every load, so this only relabels ranks to maximize node
coverage ``sum_e n_e * nodes_e`` (fewer tokens crossing nodes); with ``spread_replicas``
the replicas of one expert stay on distinct nodes. Skipped when the model would exceed
``BUNDLE_MAX_LITERALS`` literals (it then could not be built in a bounded time and memory)
or the time left could not pay for building it (``BUNDLE_S_PER_LITERAL``).
"""

from __future__ import annotations

import time

import numpy as np
from ortools.sat.python import cp_model

from optimizer.place.exact import new_solver
from optimizer.place.layer_state import LayerState

BUNDLE_MAX_LITERALS = 200_000  # model literals (about G * K + replicated experts * K) above which it is skipped
BUNDLE_S_PER_LITERAL = 2e-5    # the time left must allow this per literal (building the model)


def nodes_by_bundles(state: LayerState, deadline: float) -> None:
    """Assign whole ranks to nodes (every load unchanged) to maximize node coverage
    ``sum_e n_e * nodes_e``; keeps replicas on distinct nodes with ``spread_replicas``."""
    limit = deadline - time.monotonic()
    if limit <= 0.01:
        return
    G, K, per = state.G, state.K, state.G // state.K
    if G * K - K * (K - 1) // 2 > BUNDLE_MAX_LITERALS:
        return
    holders: dict[int, list[int]] = {}
    for g in range(G):
        for e in state.R[g]:
            holders.setdefault(int(e), []).append(g)
    multi = {e: hs for e, hs in holders.items() if len(hs) > 1}
    size = G * K - K * (K - 1) // 2 + len(multi) * K
    if not multi or size > BUNDLE_MAX_LITERALS or limit < size * BUNDLE_S_PER_LITERAL:
        return
    weight = state.coverage_weights()
    model = cp_model.CpModel()
    b = {(g, k): model.new_bool_var(f"rank{g}@node{k}") for g in range(G) for k in range(K) if k <= g}
    for g in range(G):
        model.add_exactly_one(b[g, k] for k in range(K) if (g, k) in b)
    for k in range(K):
        model.add(sum(b[g, k] for g in range(G) if (g, k) in b) == per)
    terms = []
    for e, hs in multi.items():
        covers = []
        for k in range(K):
            lits = [b[g, k] for g in hs if (g, k) in b]
            if not lits:
                continue
            if state.spec.spread_replicas:
                model.add(sum(lits) <= 1)
            u = model.new_bool_var("")
            model.add(u <= sum(lits))
            covers.append(u)
            terms.append((int(weight[e]), u, e, k))
        model.add(sum(covers) <= min(len(hs), K))  # redundant: lets CP-SAT prove the ideal
    model.maximize(sum(w * u for w, u, _, _ in terms))
    # hint: the current assignment relabelled so that rank g sits on a node <= g
    cur = _bundle_hint(state)
    for (g, k), v in b.items():
        model.add_hint(v, cur[g] == k)
    for _w, u, e, k in terms:
        model.add_hint(u, any(cur[g] == k for g in multi[e]))
    solver = new_solver(limit, 1, state.seed, state.effort)
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return
    before = state.cross_node_tokens()
    slots = [0] * K
    newR = np.empty_like(state.R)
    for g in range(G):
        k = next(k for k in range(K) if (g, k) in b and solver.boolean_value(b[g, k]))
        newR[k * per + slots[k]] = state.R[g]
        slots[k] += 1
    old = state.R
    state.R = newR
    if state.cross_node_tokens() > before + 1e-9:
        state.R = old


def _bundle_hint(state: LayerState) -> list[int]:
    """Node of each rank after relabelling nodes by first rank (so node <= rank)."""
    label: dict[int, int] = {}
    out = []
    for g in range(state.G):
        k = int(state.node[g])
        label.setdefault(k, len(label))
        out.append(label[k])
    return out

