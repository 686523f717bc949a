"""A placement in service for ``moeopt solve`` (``--current PLACEMENT``,
``search.current_placement``): the solved plan's experts are placed with the fewest moves from
it, within a tolerance of the best balance, and the plan is re-evaluated.

The current placement is read and checked before the solve (a bad file costs no search).
After the solve, it is reused when its EP rank count and its slots per MoE layer (experts +
redundant) equal the plan's; an expert-location map states no rank count, so only its slots
are compared and its rows are cut into the plan's EP ranks. Otherwise one line says why it
could not be reused (a different EP degree regroups the experts: nearly every one moves) and
the plan keeps its from-scratch placement. The EP degree itself is the solve's choice; the
current placement does not steer it (docs/placement.md, "Rebalancing a solved plan").

Reuse runs ``optimizer.place.rebalance`` (the engine of ``moeopt place --current``) on the
instance's expert loads (``costs.expert_loads``, integer parts per expert): the best balance
from scratch, then per layer the plan with the fewest moves whose hottest rank is within the
tolerance. A move is one (expert, EP rank) pair the current placement lacks; its bytes per
GPU are ``expert_bytes / etp`` (ETP shards every expert), summed per GPU over the layers of
its pipeline stage; over all GPUs a move costs ``expert_bytes * edp`` (every EDP copy of
the expert group moves it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from optimizer.errors import InputError

FIELD_CLI = "--current"
FIELD_INSTANCE = "search.current_placement"


@dataclass(frozen=True)
class CurrentPlacement:
    """Where the placement in service is and its shape (checked by ``current_shape``)."""

    path: str
    field: str          # the option or instance field that named it (for error lines)
    ranks: int | None   # EP ranks; None for an expert-location map (it states no rank count)
    slots: int          # physical expert slots per MoE layer (experts + redundant)


@dataclass
class Migrated:
    """A plan placed from the current placement (to be re-evaluated by the caller: static
    batch or service), the plan file's ``migration`` block and ``moeopt place``'s summary of
    the placement (``Placement.to_json``: status, balancedness)."""

    plan: object
    summary: dict
    placement: dict


def open_current(inst, instance_path: str, cli_path: str | None) -> CurrentPlacement | None:
    """The current placement of ``--current`` (relative to the working directory) or else of
    ``search.current_placement`` (relative to the instance file), checked; None without one."""
    from optimizer.place.current import current_shape

    if cli_path is not None:
        path, field = cli_path, FIELD_CLI
    elif inst.search.current_placement is not None:
        path, field = str(Path(instance_path).parent / inst.search.current_placement), FIELD_INSTANCE
    else:
        return None
    ranks, slots = current_shape(path, list(inst.model.moe_layer_ids), inst.model.num_experts, field)
    return CurrentPlacement(path, field, ranks, slots)


def reuse_problem(current: CurrentPlacement, ep: int, experts: int, redundant: int) -> str | None:
    """None when the plan (EP ``ep``, ``experts + redundant`` slots per MoE layer) can start
    from ``current``, else the one line saying why not."""
    slots = experts + redundant
    head = f"{current.field} {current.path}: not reused, the plan is placed from scratch"
    if current.ranks is not None and current.ranks != ep:
        return (f"{head}: it has {current.ranks} EP ranks and the plan EP{ep}; a different EP degree "
                f"regroups the experts, so nearly every one would move anyway")
    if current.slots != slots:
        return (f"{head}: it has {current.slots} expert slots per MoE layer and the plan {slots} "
                f"({experts} experts + {redundant} redundant); --redundant-experts "
                f"{current.slots - experts} keeps its replica count")
    return None


def migrate_plan(inst, plan, current: CurrentPlacement, redundant: int, tolerance: float,
                 minimize: str, time_limit_s: float, workers: int, seed: int) -> Migrated:
    """``plan`` with the placement of fewest moves from ``current`` whose hottest rank per
    layer is within ``tolerance`` of the best found from scratch."""
    import numpy as np

    from optimizer.costs.expert_loads import expert_loads
    from optimizer.costs.formulas import expert_bytes
    from optimizer.place.current import read_current
    from optimizer.place.problem import PlaceSpec, Settings
    from optimizer.place.rebalance import rebalance

    ep, experts = plan.deg.ep, inst.model.num_experts
    moe_ids = list(inst.model.moe_layer_ids)
    spec = PlaceSpec(ep, redundant)
    now = read_current(current.path, moe_ids, experts, ep, spec.slots_per_rank(experts), current.field)
    counts = np.array(expert_loads(inst), dtype=np.int64)
    size = expert_bytes(inst.model)
    placed = rebalance(counts, moe_ids, now, spec, Settings(time_limit_s, workers, seed), tolerance,
                       "moves", size)
    placement = {lp.layer: tuple(tuple(sorted(r)) for r in lp.ranks) for lp in placed.layers}
    moved = dataclasses.replace(plan, placement=placement)
    gpu_moves = moves_per_gpu(moved, now)
    m = placed.extra["migration"]
    summary = {"current": current.path, "reused": True, "tolerance": tolerance, "minimize": minimize,
               "moves": m["moves"], "scratch_moves": m["scratch_moves"],
               "slots": sum(len(r) for ranks in placement.values() for r in ranks),
               "kept_fraction": m["kept_fraction"], "balance_given_up": m["balance_given_up"],
               "moves_proven_minimal": all(lp.migration["moves_proven_minimal"] for lp in placed.layers),
               "expert_bytes": size, "moved_bytes": m["moves"] * size * plan.deg.edp,
               "max_moves_per_gpu": max(gpu_moves.values(), default=0),
               "max_moved_bytes_per_gpu": max(gpu_moves.values(), default=0) * size / plan.deg.etp}
    return Migrated(moved, summary, placed.to_json())


def not_reused(current: CurrentPlacement, reason: str) -> dict:
    """The plan file's ``migration`` block when the current placement was not reused."""
    return {"current": current.path, "reused": False, "reason": reason}


def batch_with_current(inst, plan, evaluation, status: str, solver: dict, current: CurrentPlacement,
                       redundant: int, tolerance: float, minimize: str, time_limit_s: float,
                       workers: int, seed: int):
    """A solved static-batch plan placed from ``current``: (plan, evaluation, status, solver,
    migration block, placement summary or None). Not reused (a different shape, or the
    placed plan misses a requirement): the inputs unchanged, placement summary None, the
    block saying why. The status stays only when the objective and the makespan are
    unchanged and there are no replicas (then the plan is as good as the one CP-SAT proved),
    else "feasible"."""
    from optimizer.plan.evaluate import evaluate
    from optimizer.plan.replicas import with_replica_weights

    problem = reuse_problem(current, plan.deg.ep, inst.model.num_experts, redundant)
    if problem is not None or (redundant and plan.deg.ep == 1):   # EP1 + replicas: with_replicas says why
        return plan, evaluation, status, solver, not_reused(current, problem or "EP1"), None
    moved = migrate_plan(inst, plan, current, redundant, tolerance, minimize, time_limit_s, workers, seed)
    ev = with_replica_weights(inst, moved.plan, evaluate(inst, moved.plan))  # as check counts it
    if not ev.feasible:
        missed = next(c.name for c in ev.checks if not c.ok)
        reason = (f"{current.field} {current.path}: not reused, the plan is placed from scratch: the "
                  f"placement with the fewest moves misses the requirement {missed}")
        return plan, evaluation, status, solver, not_reused(current, reason), None
    same = ev.objective_ns == evaluation.objective_ns and ev.makespan_ns == evaluation.makespan_ns
    solver = dict(solver)
    if not redundant:  # the bound holds for plans without replicas: the plan's own figures
        solver["objective"] = ev.objective_ns / 1e6
        if solver.get("bound") is not None:
            objective_ns, bound_ns = ev.objective_ns, round(solver["bound"] * 1e6)
            solver["gap"] = 0.0 if objective_ns == bound_ns else (objective_ns - bound_ns) / max(1, abs(objective_ns))
        if "makespan_ms" in solver:
            solver["makespan_ms"] = ev.makespan_ns / 1e6
    # with replicas CP-SAT proved the plan without them, not this one: "feasible" (as with_replicas)
    status = status if same and not redundant else "feasible"
    solver["status"] = status
    return moved.plan, ev, status, solver, moved.summary, moved.placement


def service_with_current(inst, result, current: CurrentPlacement, tolerance: float, minimize: str,
                         time_limit_s: float, workers: int, seed: int):
    """A solved service plan (``cpsat.service_solve`` result) placed from ``current``:
    (plan, candidate, status, migration block), the candidate re-evaluated from the plan
    (``plan.service.evaluate_service_plan``, what ``moeopt check`` recomputes) with the
    solve's serving knobs. Not reused, or an SLO/memory check missed: the solved plan. The
    status stays only when every service metric is unchanged."""
    from optimizer.plan.service import evaluate_service_plan, peak_memory_bytes, service_checks, service_metrics

    plan, chosen = result.plan, result.chosen
    problem = reuse_problem(current, plan.deg.ep, inst.model.num_experts, 0)
    if problem is not None:
        return plan, chosen, result.status, not_reused(current, problem)
    moved = migrate_plan(inst, plan, current, 0, tolerance, minimize, time_limit_s, workers, seed)
    memory = peak_memory_bytes(inst, moved.plan, chosen.knobs, result.load)
    candidate = evaluate_service_plan(inst, moved.plan, chosen.knobs, result.load)
    missed = [c.name for c in service_checks(inst, candidate, memory) if not c.ok]
    if missed:
        reason = (f"{current.field} {current.path}: not reused, the plan is placed from scratch: the "
                  f"placement with the fewest moves misses the requirement {missed[0]}")
        return plan, chosen, result.status, not_reused(current, reason)
    before = evaluate_service_plan(inst, plan, chosen.knobs, result.load)
    same = service_metrics(candidate, memory) == service_metrics(before, memory)
    return moved.plan, candidate, result.status if same else "feasible", moved.summary


def moves_per_gpu(plan, current: dict) -> dict[tuple[int, int], int]:
    """{(stage, EP rank): expert copies its GPUs receive}, over the MoE layers of the stage.
    ``current``: layer -> [G][S] expert ids in service."""
    stage_of = {layer: s for s, layers in enumerate(plan.stages) for layer in layers}
    out: dict[tuple[int, int], int] = {}
    for layer, ranks in plan.placement.items():
        for g, row in enumerate(ranks):
            key = (stage_of[layer], g)
            out[key] = out.get(key, 0) + len(set(row) - {int(e) for e in current[layer][g]})
    return out


def summary_line(summary: dict) -> str:
    """The printed account of a migration-aware placement."""
    gb = 1e9
    s = summary
    return (f"current placement {s['current']}: {s['moves']} expert moves of {s['slots']} slots "
            f"({100 * s['kept_fraction']:.2f}% kept; from scratch {s['scratch_moves']}), "
            f"{s['moved_bytes'] / gb:.3f} GB moved over all GPUs, at most {s['max_moved_bytes_per_gpu'] / gb:.3f} GB "
            f"into one GPU; balance given up {100 * s['balance_given_up']:.4f}% of the best "
            f"(tolerance {100 * s['tolerance']:.3g}%)")


def check_options(mode: str, current_cli: str | None, tolerance: float | None, minimize: str | None,
                  inst) -> None:
    """InputError for the options that need a current placement or an aggregated plan."""
    has_current = current_cli is not None or inst.search.current_placement is not None
    if not has_current:
        for name, value in (("--tolerance", tolerance), ("--minimize", minimize)):
            if value is not None:
                raise InputError(f"{name}={value}: applies with a current placement (--current or "
                                 f"{FIELD_INSTANCE})")
    elif mode != "agg":
        field = FIELD_CLI if current_cli is not None else FIELD_INSTANCE
        raise InputError(f"{field}: --mode={mode}: a current placement is reused for aggregated plans "
                         f"(--mode agg) only")
