"""Per-layer placement bounds proven by CP-SAT: the smallest hot-rank load of one MoE layer on
``ep`` ranks, searched only where the greedy placement and the cheap bound
(``costs.config_bounds.hot_load_lower_bound``) disagree, within a deterministic budget;
on layers too large to model jointly, swaps (``rebalance``) first close most of the gap.
Their proven values tighten the configuration bounds that prune the deployment model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from constraints.placement import MAX_JOINT_ASSIGNMENTS
from optimizer.costs.config_bounds import hot_load_lower_bound
from optimizer.costs.greedy_placement import greedy_ranks
from optimizer.costs.units import LOAD_SCALE
from optimizer.cpsat.rebalance import rebalance

# A layer too large to model jointly goes to CP-SAT only when swaps leave its hot load more
# than this above the cheap bound (parts of LOAD_SCALE: 0.01 % of the layer's tokens). Swaps
# usually end within a few parts of the bound; CP-SAT's short per-layer searches rarely beat
# them on such layers, and a layer left unproven is reported (``solver.unproven_layers``).
SEARCH_LARGE_GAP = LOAD_SCALE // 10_000


@dataclass(frozen=True)
class HotLoad:
    """Hot-rank load of one layer on ``ep`` ranks: proven lower bound and best placement."""

    lower: int
    ranks: list[list[int]]
    loads: tuple[int, ...]

    @property
    def upper(self) -> int:
        """Hot load of the best placement found (== lower when proven optimal)."""
        return max(sum(self.loads[x] for x in r) for r in self.ranks)


@lru_cache(maxsize=65536)
def min_hot_load(loads: tuple[int, ...], ep: int, time_limit_s: float = 1.0) -> HotLoad:
    """Smallest hot-rank load over all placements of one layer (CP-SAT on the same
    placement constraints as the deployment model), with its proven lower bound."""
    from ortools.sat.python import cp_model

    from constraints.placement import add_layer_placement
    from optimizer.costs.layout import trivial_ranks
    if ep == 1 or ep == len(loads):
        ranks = trivial_ranks(len(loads), ep)
        return HotLoad(max(sum(loads[x] for x in r) for r in ranks), ranks, loads)
    greedy = greedy_ranks(loads, ep)
    greedy_hot = max(sum(loads[x] for x in r) for r in greedy)
    lower = hot_load_lower_bound(loads, ep)
    if greedy_hot == lower:  # the greedy placement meets the bound: nothing to search
        return HotLoad(lower, greedy, loads)
    model = cp_model.CpModel()
    assign, hot = add_layer_placement(model, loads, ep, f"ep={ep}")
    model.minimize(hot)
    solver = cp_model.CpSolver()
    # deterministic time (not wall time) bounds the search, so results never depend on load
    solver.parameters.max_deterministic_time = time_limit_s
    solver.parameters.max_time_in_seconds = 20 * time_limit_s + 1
    solver.parameters.num_workers = 1
    solver.parameters.catch_sigint_signal = False  # else CP-SAT swallows Ctrl-C (solve.stop_on_sigint)
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return HotLoad(lower, greedy, loads)
    ranks = [[x for x in range(len(loads)) if (x, r) in assign and solver.boolean_value(assign[x, r])]
             for r in range(ep)]
    return HotLoad(max(lower, round(solver.best_objective_bound)), ranks, loads)


def exact_hot_loads(loads, eps: list[int], budget: float = 3.0) -> dict[int, list[HotLoad]]:
    """Per EP degree in ``eps``, every layer's hot load: the greedy placement, improved by
    swaps (``rebalance``) on layers too large to model jointly; proven by CP-SAT
    (``min_hot_load``) for the layers with the largest gap left between that placement and
    the cheap bound (on a large layer: only a gap above SEARCH_LARGE_GAP),
    within ``budget`` units of CP-SAT's deterministic time in all (so the answer does not
    depend on how busy the machine is); the other layers keep the greedy placement and
    the cheap bound (valid bounds, not proven optima)."""
    out: dict[int, list[HotLoad]] = {}
    work = []
    for ep in eps:
        rows = []
        for i, row in enumerate(loads):
            if not 1 < ep < len(row):
                rows.append(min_hot_load(tuple(row), ep))
                continue
            lower = hot_load_lower_bound(row, ep)
            ranks = greedy_ranks(row, ep)
            if len(row) * ep > MAX_JOINT_ASSIGNMENTS:  # fixed in the model: improve it cheaply first
                ranks = rebalance(tuple(row), ranks, lower)
            rows.append(HotLoad(lower, ranks, tuple(row)))
            gap = rows[-1].upper - rows[-1].lower
            if gap > (SEARCH_LARGE_GAP if len(row) * ep > MAX_JOINT_ASSIGNMENTS else 0):
                work.append((-gap, ep, i))
        out[ep] = rows
    # largest gaps first; every search gets the same deterministic limit
    work.sort()
    searches = work[: max(1, int(budget / 0.05))]
    per_search = round(max(0.05, budget / max(1, len(searches))), 3)
    for _, ep, i in searches:
        out[ep][i] = min_hot_load(tuple(loads[i]), ep, per_search)
    return out
