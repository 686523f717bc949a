"""Expert placement: which experts each EP rank holds in every MoE layer.

Per candidate EP degree e and layer: every expert on exactly one rank, every rank holding
E/e experts (equal slots), and ``hot[e][layer]`` >= the routed load of every rank. For
e = 1 (one rank holds all) and e = E (one expert per rank) the hot load is a constant.
"""

from __future__ import annotations

from optimizer.costs.config_bounds import hot_load_lower_bound
from optimizer.costs.greedy_placement import greedy_ranks, heaviest_first
from optimizer.costs.layout import trivial_ranks
from optimizer.costs.units import LOAD_SCALE
from optimizer.cpsat.context import PLACEMENT, Context, PlacementVars

NEEDS: tuple[str, ...] = ()
PROVIDES = PLACEMENT


def add_layer_placement(model, loads: tuple[int, ...], ep: int, tag: str, lower: int = 0,
                        hint: list[list[int]] | None = None):
    """Placement of one layer's experts on ``ep`` equal ranks; returns (assign, hot) with
    assign[expert, rank] Booleans and ``hot`` >= every rank's routed load (parts of
    LOAD_SCALE). ``lower`` is a known lower bound on the hot load; ``hint`` a placement
    to start from (default: the greedy one)."""
    num_experts = len(loads)
    order = heaviest_first(loads)
    assign: dict[tuple[int, int], object] = {}
    on_rank: list[list[tuple[int, object]]] = [[] for _ in range(ep)]
    # Symmetry breaking: ranks are interchangeable, so the i-th heaviest expert may be
    # placed only on ranks 0..i (any placement can be relabelled into this form).
    for position, expert in enumerate(order):
        choices = []
        for rank in range(min(position, ep - 1) + 1):
            var = model.new_bool_var(f"assign[{tag},x={expert},r={rank}]")
            assign[expert, rank] = var
            on_rank[rank].append((expert, var))
            choices.append(var)
        model.add_exactly_one(choices)
    hot = model.new_int_var(max(lower, hot_load_lower_bound(loads, ep)), LOAD_SCALE, f"hot[{tag}]")
    for rank in range(ep):
        model.add(sum(var for _, var in on_rank[rank]) == num_experts // ep)
        model.add(hot >= sum(loads[expert] * var for expert, var in on_rank[rank]))
    start = _relabelled(hint or greedy_ranks(loads, ep), order)
    for rank, experts in enumerate(start):
        for expert in experts:
            for other in range(ep):
                if (expert, other) in assign:
                    model.add_hint(assign[expert, other], other == rank)
    model.add_hint(hot, max(sum(loads[expert] for expert in experts) for experts in start))
    return assign, hot


def _relabelled(ranks: list[list[int]], order: list[int]) -> list[list[int]]:
    """Ranks sorted so that the symmetry-breaking rule holds (rank r holds an expert of
    position >= r): order ranks by the best position among their experts."""
    position = {expert: i for i, expert in enumerate(order)}
    return sorted(ranks, key=lambda experts: min(position[expert] for expert in experts))


# A layer whose placement has more expert-rank pairs than this is not modelled jointly:
# every objective is non-decreasing in each layer's hot load, so the layers decompose, and
# the layer keeps the best placement its own CP-SAT solve found (pruning.min_hot_load).
MAX_JOINT_ASSIGNMENTS = 256


def build(ctx: Context) -> PlacementVars:
    """Placement variables and hot loads (per MoE layer) for every candidate EP degree.
    A layer with a proven optimal placement, or too large to model jointly, gets its
    precomputed placement and hot load as constants."""
    data = ctx.data
    out = PlacementVars(assign={}, hot={}, fixed={})
    for ep in data.values_of("ep"):
        out.assign[ep], out.hot[ep], out.fixed[ep] = {}, [], {}
        exact = data.hot_exact.get(ep)
        for i, loads in enumerate(data.loads):
            if ep == 1:
                out.hot[ep].append(LOAD_SCALE)
            elif ep == len(loads):
                out.hot[ep].append(max(loads))
            elif exact and (exact[i].lower == exact[i].upper or len(loads) * ep > MAX_JOINT_ASSIGNMENTS):
                out.fixed[ep][i] = exact[i].ranks
                out.hot[ep].append(exact[i].upper)
            else:
                lower = exact[i].lower if exact else 0
                hint = exact[i].ranks if exact else None
                assign, hot = add_layer_placement(ctx.model, loads, ep, f"ep={ep},l={data.moe_ids[i]}",
                                                  lower, hint)
                for (expert, rank), var in assign.items():
                    out.assign[ep][i, expert, rank] = var
                out.hot[ep].append(hot)
    return out


def unproven_layers(ctx: Context, ep: int) -> list[int]:
    """MoE layers whose fixed placement is not proven optimal (the plan's gap comes
    from them)."""
    exact = ctx.data.hot_exact.get(ep, [])
    return [ctx.data.moe_ids[i] for i in ctx.placement.fixed.get(ep, {}) if exact[i].lower < exact[i].upper]


def extract(ctx: Context, solver, ep: int) -> dict[int, tuple[tuple[int, ...], ...]]:
    """MoE layer -> [rank] -> sorted expert ids of the solved placement for ``ep``."""
    out = {}
    placement = ctx.placement
    for i, loads in enumerate(ctx.data.loads):
        num_experts = len(loads)
        if ep == 1 or ep == num_experts:
            ranks = trivial_ranks(num_experts, ep)
        elif i in placement.fixed.get(ep, {}):
            ranks = placement.fixed[ep][i]
        else:
            chosen = placement.assign[ep]
            ranks = [[expert for expert in range(num_experts) if (i, expert, rank) in chosen
                      and solver.boolean_value(chosen[i, expert, rank])] for rank in range(ep)]
        out[ctx.data.moe_ids[i]] = tuple(tuple(sorted(experts)) for experts in ranks)
    return out
