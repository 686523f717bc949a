"""Exhaustive reference optimizer for small instances: no CP-SAT, no bounding, no model.

It enumerates every admissible configuration (``candidates.admissible_degrees``), every
contiguous layer split (all compositions of ``num_layers`` into ``pp`` positive parts)
and, per (EP degree, layer), every expert placement, and keeps the lexicographic optimum
(objective_ns, then makespan_ns) over the plans that meet every requirement:

- memory: every stage's per-GPU bytes <= floor(memory_limit_gb * 1e9);
- timing: makespan_ns <= every limit of ``evaluate.makespan_limit_ns``.

Costs come from the product's integer tables (``tables.stage_costs`` on Megatron's layout,
``StageCosts.stage_ns``, ``MemoryParts.stage_total``, ``evaluate.objective_ns`` and
``evaluate.makespan_ns``): the point is to check the SEARCH and the linearization of the
CP-SAT model, not the cost formulas. Every call into those tables goes through the small
adapters under "product API" below; they accept the prefill-only tables of the current
commit and the per-layer / per-phase tables of the refactor in progress (``prefill`` phase,
per-layer memory, MoE layer ids). Decode (``output_tokens > 0``) is refused: which of TTFT,
TPOT and batch time the model ranks second is not settled yet.

Why one placement per (EP degree, layer) suffices (the monotonicity argument)
-----------------------------------------------------------------------------
Fix a configuration and a layer split. A placement enters the costs only through the hot
load L_l of each layer (max over EP ranks of the summed loads of the rank's experts):
- ``moe_ns(L)`` = max(ceil(a*L/Q), W + ceil(b*L/Q)) + alpha with a, b, W, alpha >= 0 is
  non-decreasing in L;
- a stage time is a sum of constants and ``moe_ns`` of its layers, so it is non-decreasing
  in every L_l; the makespan sum_j t_j + (m-1) max_j t_j + (p-1) t_p2p is a non-negative
  combination of sums and maxima of stage times, so it is non-decreasing too;
- ``objective_ns`` = ceil((p * makespan - m * U + constants) / p) per phase (time lost per GPU)
  is non-decreasing in the makespan, hence in L;
- memory does not depend on the placement at all.
Layers are placed independently (one placement per layer, no coupling between layers), so
taking in every layer a placement of minimum hot load gives, for every split at once, the
smallest objective and the smallest makespan that configuration can reach, and it is
feasible whenever any placement is. ``brute_force_joint`` drops this shortcut (it
enumerates joint placements of all layers) and is used by a test to confirm it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import combinations, product

from optimizer.costs.candidates import admissible_degrees
from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.tables import LinkFacts, StageCosts, stage_costs
from optimizer.costs.timing import makespan_limit_ns, makespan_ns, objective_ns
from optimizer.costs.units import gb_to_bytes_floor
from optimizer.inputs.schema import Instance

ENUMERATE_MAX_EXPERTS = 8  # plain set-partition enumeration up to here, bitmask search above
Placement = tuple[tuple[int, ...], ...]  # [ep_rank] -> expert ids of one layer


# ---------------------------------------------------------------- product API
def moe_layer_ids(inst: Instance) -> list[int]:
    """Layers whose rows ``expert_loads`` returns (all layers unless the schema says)."""
    return list(getattr(inst.model, "moe_layer_ids", range(inst.model.num_layers)))


def check_supported(inst: Instance) -> None:
    """Refuse what the enumerator does not model (decode phases)."""
    if getattr(inst.workload, "output_tokens", 0):
        raise NotImplementedError("bruteforce covers prefill-only workloads (output_tokens = 0)")


def stage_time_ns(c: StageCosts, hot: dict[int, int], first: int, end: int, n: int) -> int:
    """One micro-batch through the stage holding layers [first, end) of n, ns."""
    if hasattr(c, "prefill"):  # per-phase tables
        return c.prefill.stage_ns(range(first, end), hot, first == 0, end == n)
    return c.stage_ns([hot[l] for l in range(first, end) if l in hot], first == 0, end == n)


def stage_bytes(c: StageCosts, first: int, end: int, n: int) -> int:
    """Per-GPU bytes of the stage holding layers [first, end) of n."""
    if isinstance(c.memory.layer_weights, tuple):  # per-layer memory parts
        return c.memory.stage_total(range(first, end), first == 0, end == n)
    return c.memory.stage_total(end - first, first == 0, end == n)


def p2p_ns(c: StageCosts) -> int:
    """One pipeline send between stages, ns."""
    return c.prefill.p2p_ns if hasattr(c, "prefill") else c.p2p_ns


# ---------------------------------------------------------------- placements of one layer
def equal_partitions(items: tuple[int, ...], group_size: int):
    """Every partition of ``items`` into unordered groups of ``group_size`` (each once):
    the first item's group is chosen among all (group_size-1)-subsets of the rest."""
    if not items:
        yield ()
        return
    first, rest = items[0], items[1:]
    for others in combinations(rest, group_size - 1):
        remaining = tuple(x for x in rest if x not in others)
        for tail in equal_partitions(remaining, group_size):
            yield ((first, *others),) + tail


def rank_loads_max(loads: tuple[int, ...], ranks: Placement) -> int:
    """Hot load of one layer: the largest summed load of one rank's experts."""
    return max(sum(loads[x] for x in experts) for experts in ranks)


def min_hot_enumerated(loads: tuple[int, ...], ep: int) -> tuple[int, Placement]:
    """(minimum hot load, a placement reaching it) by plain enumeration of partitions."""
    best = None
    for ranks in equal_partitions(tuple(range(len(loads))), len(loads) // ep):
        hot = rank_loads_max(loads, ranks)
        if best is None or hot < best[0]:
            best = (hot, ranks)
    return best


def min_hot_bitmask(loads: tuple[int, ...], ep: int) -> tuple[int, Placement]:
    """(minimum hot load, a placement reaching it) by an exact search over subsets.

    best(mask) = min over groups G of ``group_size`` experts of ``mask`` that contain its
    lowest expert of max(load(G), best(mask - G)); memoized on the mask (2^E states)."""
    group_size = len(loads) // ep

    @cache
    def best(mask: int) -> tuple[int, tuple[int, ...]]:
        if mask == 0:
            return 0, ()
        members = [x for x in range(len(loads)) if mask >> x & 1]
        first, rest = members[0], members[1:]
        found = None
        for others in combinations(rest, group_size - 1):
            group_load = loads[first] + sum(loads[x] for x in others)
            if found is not None and group_load >= found[0]:
                continue  # cannot beat the incumbent: this group alone is already as hot
            group_mask = (1 << first) | sum(1 << x for x in others)
            tail_load, tail_groups = best(mask & ~group_mask)
            value = max(group_load, tail_load)
            if found is None or value < found[0]:
                found = (value, (group_mask,) + tail_groups)
        return found

    hot, masks = best((1 << len(loads)) - 1)
    ranks = tuple(tuple(x for x in range(len(loads)) if m >> x & 1) for m in masks)
    return hot, ranks


def min_hot(loads: tuple[int, ...], ep: int) -> tuple[int, Placement]:
    """Minimum hot load of one layer on ``ep`` ranks of E/ep experts each, with a witness."""
    if len(loads) <= ENUMERATE_MAX_EXPERTS:
        return min_hot_enumerated(loads, ep)
    return min_hot_bitmask(loads, ep)


# ---------------------------------------------------------------- splits of one configuration
def compositions(num_layers: int, pp: int):
    """Every contiguous split of ``num_layers`` layers into ``pp`` non-empty stages, as
    (first, end) layer ranges."""
    for cuts in combinations(range(1, num_layers), pp - 1):
        bounds = (0, *cuts, num_layers)
        yield tuple(zip(bounds, bounds[1:]))


@dataclass(frozen=True)
class ConfigBest:
    """The best plan of one configuration (min-hot placement, best feasible split)."""

    deg: Degrees
    objective_ns: int
    makespan_ns: int
    segments: tuple[tuple[int, int], ...]
    max_memory_bytes: int


def segment_tables(c: StageCosts, hot: dict[int, int], n: int) -> tuple[dict, dict]:
    """Stage time (ns per micro-batch) and per-GPU bytes of every layer range [a, b)."""
    times, mems = {}, {}
    for a in range(n):
        for b in range(a + 1, n + 1):
            times[a, b] = stage_time_ns(c, hot, a, b, n)
            mems[a, b] = stage_bytes(c, a, b, n)
    return times, mems


def best_split(c: StageCosts, hot: dict[int, int], n: int, cap_bytes: int,
               limits_ns: dict[str, int]) -> ConfigBest | None:
    """Smallest-makespan split of n layers that fits memory and every makespan limit
    (None if none); ``hot`` maps each MoE layer to its hot load. The objective (time lost
    per GPU = makespan - the configuration's useful work) grows with the makespan, so the
    smallest-makespan split is also the smallest-objective one."""
    times, mems = segment_tables(c, hot, n)
    best = None
    for segments in compositions(n, c.deg.pp):
        peak_bytes = max(mems[s] for s in segments)
        if peak_bytes > cap_bytes:
            continue
        span_ns = makespan_ns([times[s] for s in segments], c.deg.micro_batches, p2p_ns(c))
        if any(span_ns > limit for limit in limits_ns.values()):
            continue
        if best is None or span_ns < best.makespan_ns:
            objective = objective_ns(c, span_ns, 0, len(hot))
            best = ConfigBest(c.deg, objective, span_ns, segments, peak_bytes)
    return best


# ---------------------------------------------------------------- the whole search
def config_tables(inst: Instance, num_gpus: int) -> list[StageCosts]:
    """Integer cost tables of every admissible configuration on Megatron's layout."""
    gpn = inst.hardware.gpus_per_node
    return [stage_costs(inst, d, LinkFacts.of(megatron_layout(d, gpn)))
            for d in admissible_degrees(inst, num_gpus)]


def min_hot_by_ep(inst: Instance, eps) -> dict[int, dict[int, tuple[int, Placement]]]:
    """Per EP degree, per MoE layer: (minimum hot load, placement)."""
    rows = dict(zip(moe_layer_ids(inst), expert_loads(inst)))
    return {ep: {l: min_hot(row, ep) for l, row in rows.items()} for ep in sorted(set(eps))}


def per_config_best(inst: Instance, num_gpus: int | None = None, cap_bytes: int | None = None,
                    limits_ns: dict[str, int] | None = None) -> tuple[list[ConfigBest], dict]:
    """Best plan of every configuration that has a feasible one, and the placements.

    ``cap_bytes`` and ``limits_ns`` default to the instance's (pass 1 << 62 and {} to see
    every configuration's unconstrained best)."""
    check_supported(inst)
    gpus = num_gpus or inst.hardware.num_gpus
    cap = gb_to_bytes_floor(inst.memory_limit_gb) if cap_bytes is None else cap_bytes
    limits = makespan_limit_ns(inst, gpus) if limits_ns is None else limits_ns
    tables = config_tables(inst, gpus)
    hots = min_hot_by_ep(inst, (c.deg.ep for c in tables))
    out = []
    for c in tables:
        hot = {l: h for l, (h, _) in hots[c.deg.ep].items()}
        found = best_split(c, hot, inst.model.num_layers, cap, limits)
        if found is not None:
            out.append(found)
    return out, hots


def brute_force(inst: Instance, num_gpus: int | None = None) -> dict | None:
    """Lexicographic optimum (objective_ns, makespan_ns) over every admissible
    configuration, split and placement; None when no plan meets the requirements.

    Keys: objective_ns, makespan_ns, deg (one optimal Degrees), stages, placement
    ([layer][ep_rank] expert ids), optimal_degrees (every configuration reaching the
    optimum), configurations (how many were enumerated). ``placement`` is indexed by the
    MoE layers in increasing order (all layers when every layer is MoE)."""
    gpus = num_gpus or inst.hardware.num_gpus
    bests, hots = per_config_best(inst, gpus)
    if not bests:
        return None
    key = min((b.objective_ns, b.makespan_ns) for b in bests)
    winners = [b for b in bests if (b.objective_ns, b.makespan_ns) == key]
    top = min(winners, key=lambda b: b.deg)
    return {"objective_ns": key[0], "makespan_ns": key[1], "deg": top.deg,
            "stages": tuple(tuple(range(a, b)) for a, b in top.segments),
            "placement": tuple(p for _, (_, p) in sorted(hots[top.deg.ep].items())),
            "optimal_degrees": frozenset(b.deg for b in winners),
            "configurations": len(admissible_degrees(inst, gpus))}


# ---------------------------------------------------------------- without the shortcut
def equal_assignments(num_experts: int, ep: int):
    """Every map expert -> EP rank with exactly E/ep experts per rank (ranks labelled)."""
    slots = num_experts // ep
    for ranks_of in product(range(ep), repeat=num_experts):
        if all(ranks_of.count(r) == slots for r in range(ep)):
            yield tuple(tuple(x for x in range(num_experts) if ranks_of[x] == r)
                        for r in range(ep))


def brute_force_joint(inst: Instance, num_gpus: int | None = None) -> dict | None:
    """Like ``brute_force`` but enumerating the joint placement of all layers (labelled
    ranks, no monotonicity shortcut) for every configuration and split; tiny cases only."""
    m = inst.model
    if m.num_layers > 2 or m.num_experts > 4:
        raise ValueError("brute_force_joint is for <= 2 layers and <= 4 experts")
    check_supported(inst)
    gpus = num_gpus or inst.hardware.num_gpus
    cap = gb_to_bytes_floor(inst.memory_limit_gb)
    limits = makespan_limit_ns(inst, gpus)
    rows = list(zip(moe_layer_ids(inst), expert_loads(inst)))
    n = m.num_layers
    best = None
    for c in config_tables(inst, gpus):
        layer_choices = list(equal_assignments(m.num_experts, c.deg.ep))
        for joint in product(layer_choices, repeat=len(rows)):
            hot = {l: rank_loads_max(row, ranks) for (l, row), ranks in zip(rows, joint)}
            for segments in compositions(n, c.deg.pp):
                if any(stage_bytes(c, a, b, n) > cap for a, b in segments):
                    continue
                times = [stage_time_ns(c, hot, a, b, n) for a, b in segments]
                span = makespan_ns(times, c.deg.micro_batches, p2p_ns(c))
                if any(span > limit for limit in limits.values()):
                    continue
                key = (objective_ns(c, span, 0, len(rows)), span)
                if best is None or key < best[0]:
                    best = (key, c.deg)
    if best is None:
        return None
    return {"objective_ns": best[0][0], "makespan_ns": best[0][1], "deg": best[1]}


__all__ = ["brute_force", "brute_force_joint", "per_config_best", "min_hot", "min_hot_bitmask",
           "min_hot_enumerated", "equal_partitions", "compositions"]
