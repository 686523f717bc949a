"""Per-configuration lower bounds and a greedy warm start, in pure Python.

Used before CP-SAT to (1) drop configurations that provably cannot meet a requirement
(their lower-bound makespan exceeds a limit, or no layer split fits memory), (2) drop
configurations whose lower-bound objective exceeds that of a feasible greedy plan (they
cannot be optimal), and (3) hint CP-SAT with that greedy plan. Every bound here is valid
for every placement and split, so the filtering never removes an optimal plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from constraints.placement import greedy_ranks
from optimizer.evaluate import makespan_ns, objective_ns
from optimizer.tables import StageCosts
from optimizer.units import LOAD_SCALE, ceil_div


def hot_load_lower_bound(loads: tuple[int, ...], ep: int) -> int:
    """No placement of one layer on ``ep`` equal ranks has a hot rank below this: the mean,
    and the rank holding the heaviest expert plus the lightest others that fill its slots."""
    slots = len(loads) // ep
    ordered = sorted(loads)
    return max(ceil_div(LOAD_SCALE, ep), ordered[-1] + sum(ordered[: slots - 1]))


def layer_split_fits(c: StageCosts, num_layers: int, cap_bytes: int) -> list[int] | None:
    """Layers per stage (contiguous, non-empty) that fit ``cap_bytes`` on every GPU, as even
    as possible; None when no split fits."""
    p, mp = c.deg.pp, c.memory
    per_layer = mp.layer_weights + mp.layer_kv
    room = []
    for j in range(p):
        fixed = (mp.activations + mp.buffers + (mp.embedding if j == 0 else 0)
                 + (mp.head if j == p - 1 else 0))
        free = cap_bytes - fixed
        room.append(min(num_layers, free // per_layer) if free >= 0 else -1)
    if min(room) < 1 or sum(room) < num_layers:
        return None
    counts = [1] * p
    for _ in range(num_layers - p):  # fill the stage with the most room left, evenly
        j = max(range(p), key=lambda i: (room[i] - counts[i] > 0, -counts[i], -i))
        counts[j] += 1
    return counts


def makespan_lower_bound(c: StageCosts, hot_lb: list[int]) -> int:
    """Makespan of the best split with every layer at its hot-load lower bound: the stage
    sum is split-independent and the slowest stage is at least the average."""
    p, m = c.deg.pp, c.deg.micro_batches
    total = c.stage_ns(hot_lb, True, True)
    return total + (m - 1) * ceil_div(total, p) + (p - 1) * c.p2p_ns


@dataclass(frozen=True)
class Bounds:
    """Lower bounds of one configuration, and whether its memory can fit at all."""

    objective_ns: int
    makespan_ns: int
    memory_fits: bool


def config_bounds(c: StageCosts, hot_lb: list[int], num_layers: int, cap: int) -> Bounds:
    return Bounds(objective_ns(c, hot_lb), makespan_lower_bound(c, hot_lb),
                  layer_split_fits(c, num_layers, cap) is not None)


@dataclass(frozen=True)
class GreedyPlan:
    """A feasible plan built without the solver (warm start and objective cutoff)."""

    index: int
    counts: list[int]
    placement: dict[int, list[list[list[int]]]]  # ep -> [layer][rank] expert ids
    objective_ns: int
    makespan_ns: int


def split_stage_ns(c: StageCosts, hot: list[int], counts: list[int]) -> list[int]:
    """Stage times of a contiguous split given by layer counts."""
    out, start, p = [], 0, len(counts)
    for j, n in enumerate(counts):
        out.append(c.stage_ns(hot[start:start + n], j == 0, j == p - 1))
        start += n
    return out


def greedy_plan(cfgs: list[StageCosts], loads, limits_ns: dict[str, int], cap: int,
                goal: str = "objective", placements: dict | None = None) -> GreedyPlan | None:
    """The best plan, by (objective, makespan) or by (makespan, objective) for ``goal`` =
    "makespan", over all configurations with greedy placement and the most even split that
    fits memory; None when none meets every requirement. ``placements`` may give better
    placements per EP degree than the greedy rule."""
    placements = dict(placements or {})
    best = None
    limit = min(limits_ns.values(), default=None)
    for k, c in enumerate(cfgs):
        ep = c.deg.ep
        if ep not in placements:
            placements[ep] = [greedy_ranks(row, ep) for row in loads]
        hot = [max(sum(row[x] for x in r) for r in ranks) for row, ranks in zip(loads, placements[ep])]
        counts = layer_split_fits(c, len(loads), cap)
        if counts is None:
            continue
        span = makespan_ns(split_stage_ns(c, hot, counts), c.deg.micro_batches, c.p2p_ns)
        if limit is not None and span > limit:
            continue
        key = (objective_ns(c, hot), span) if goal == "objective" else (span, objective_ns(c, hot))
        if best is None or key < best[0]:
            best = (key, k, counts)
    if best is None:
        return None
    key, k, counts = best
    obj, span = key if goal == "objective" else key[::-1]
    return GreedyPlan(k, counts, placements, obj, span)


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

    from constraints.placement import add_layer_placement, trivial_ranks
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
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 1
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return HotLoad(lower, greedy, loads)
    ranks = [[x for x in range(len(loads)) if (x, r) in assign and solver.boolean_value(assign[x, r])]
             for r in range(ep)]
    return HotLoad(max(lower, round(solver.best_objective_bound)), ranks, loads)


def exact_hot_loads(loads, eps: list[int]) -> dict[int, list[HotLoad]]:
    """``min_hot_load`` of every layer for each EP degree in ``eps``."""
    return {ep: [min_hot_load(tuple(row), ep) for row in loads] for ep in eps}
