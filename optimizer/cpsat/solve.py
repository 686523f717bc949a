"""Solve an instance: the lexicographic CP-SAT solve, and the greedy fallback.

Phase 1 minimizes the primary objective (time lost to communication and imbalance);
phase 2 keeps it at its optimum and minimizes the batch makespan (TTFT). A plan is called
"optimal" only when CP-SAT proved both phases optimal.

Time limit and Ctrl-C (``budget.py``): one Budget per ``solve()`` call holds the deadline
that every CP-SAT solve of the call shares (phase 1, phase 2 and each step of an
infeasibility explanation get what is left of it, not the full limit each); a model build
that overruns it is abandoned. Under ``interruptible`` the first SIGINT stops the search in
progress, which then returns its best solution, and starts no further solve; the plan found
so far is returned as "feasible" with its gap (a SIGINT during the build stops with
KeyboardInterrupt: there is no plan yet). When CP-SAT found no solution in time, the greedy
warm start is returned if it meets every requirement; only when it does not either is there
no plan (exit 4). Times or sizes beyond CP-SAT's 64-bit integers are OutOfRange (exit 2).
Infeasible instances are explained by ``explain.py`` (exit 3).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from constraints.placement import unproven_layers
from optimizer.costs.config_bounds import hot_load_lower_bound, stages_of
from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.layout import megatron_layout
from optimizer.costs.timing import hot_load
from optimizer.costs.units import ns_to_ms, ns_to_s
from optimizer.cpsat.budget import Budget, OutOfTime, building, stop_on_sigint
from optimizer.cpsat.explain import explain_infeasible, smallest_gpu_count
from optimizer.cpsat.model import DeploymentModel, Progress
from optimizer.cpsat.search import (
    DataBuilder,
    PhaseResult,
    SolverSettings,
    build_model,
    extract_plan,
    hint_all,
    make_solver,
    run_phase,
)
from optimizer.errors import NoSolutionError
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Evaluation, Plan, evaluate

log = logging.getLogger(__name__)


@dataclass
class SolveResult:
    """A solved plan with its evaluation and the solver's account of it."""

    status: str  # "optimal" | "feasible"
    plan: Plan
    evaluation: Evaluation
    primary: PhaseResult
    secondary: PhaseResult | None
    wall_s: float
    num_configurations: int
    extra: dict = field(default_factory=dict)


def solve(inst: Instance, num_gpus: int | None = None, time_limit_s: float | None = None,
          workers: int | None = None, seed: int | None = None, interruptible: bool = False,
          log_search: bool = False,
          on_model: Callable[[cp_model.CpModel], None] | None = None) -> SolveResult:
    """Best plan for ``inst`` on ``num_gpus`` GPUs (default: the instance's), within the time
    limit for the whole call. With ``interruptible`` (the command line), Ctrl-C stops the
    search and returns the best plan found so far (``extra["interrupted"]``). With
    ``log_search``, CP-SAT's search logs go to stderr; ``on_model`` is called with the
    phase-1 model (objective set) once it is built, before any search.

    Raises InfeasibleError (exit 3) with the conflicting requirements and bounds, or
    NoSolutionError (exit 4) when the time limit passes with no plan."""
    settings = SolverSettings.of(inst, time_limit_s, workers, seed, log_search)
    budget = Budget(settings.time_limit_s)
    log.info("solve %s on %d GPUs: time limit %g s", inst.name, num_gpus or inst.hardware.num_gpus,
             settings.time_limit_s)
    with stop_on_sigint(budget) if interruptible else nullcontext():
        result = solve_within(inst, num_gpus or inst.hardware.num_gpus, settings, budget, on_model)
    if interruptible and budget.interrupted and result.status == "feasible":
        result.extra["interrupted"] = True
    return result


def solve_within(inst: Instance, gpus: int, settings: SolverSettings, budget: Budget,
                 on_model: Callable[[cp_model.CpModel], None] | None = None) -> SolveResult:
    """The lexicographic solve on ``gpus`` GPUs, every build and search within ``budget``."""
    start = time.perf_counter()
    builder = DataBuilder(inst, gpus)
    progress = Progress()
    try:
        # stop at the deadline once a greedy plan is known, else use the grace to find one
        with building(budget, ready=lambda: progress.greedy is not None):
            dm = build_model(builder.data(), cutoff="objective", progress=progress)
            if not dm.empty:
                dm.model.minimize(dm.objective)
    except OutOfTime:
        if budget.interrupted or progress.greedy is None:
            no_plan(settings, budget, " (building the model took all of it)")
        log.info("the time limit passed during the model build: the greedy plan is the plan")
        result = greedy_result(inst, progress, start)
        if result is None:
            no_plan(settings, budget, " (building the model took all of it)")
        return result
    if on_model is not None:
        on_model(dm.model)
    if dm.empty:
        raise explain_infeasible(inst, gpus, settings, budget, builder)
    model = dm.model
    solver = make_solver(settings, budget.left(), len(dm.data.cfgs))
    log.info("phase 1: CP-SAT over %d configuration(s), %.2f s left", len(dm.data.cfgs), budget.left())
    first = run_phase(solver, model, budget) if not budget.interrupted else PhaseResult("unknown", None, None, 0.0)
    if first.status == "infeasible":
        raise explain_infeasible(inst, gpus, settings, budget, builder)
    second = None
    if first.objective is None:
        plan = greedy_fallback(inst, dm)
        if plan is None:
            no_plan(settings, budget)
        log.info("phase 1 found no solution in time: the greedy warm start is the plan")
    else:
        plan = extract_plan(inst, dm, solver)
        if first.status == "optimal" and not budget.expired:
            model.add(dm.objective <= first.objective)
            hint_all(model, solver)
            model.minimize(dm.makespan)
            solver2 = make_solver(settings, budget.left(), len(dm.data.cfgs))
            log.info("phase 2: makespan at the optimal objective, %.2f s left", budget.left())
            second = run_phase(solver2, model, budget)
            if second.objective is not None:
                plan = extract_plan(inst, dm, solver2)
    ev = evaluate(inst, plan)
    if first.objective is None and not ev.feasible:
        no_plan(settings, budget)  # the greedy plan misses a requirement after all
    unproven = unproven_layers(dm.ctx, plan.deg.ep)
    # The reported objective is the plan's own (exact), never the solver's lower-bounded
    # variable; with unproven fixed placements the solver's bound holds only for those
    # placements, so the bound is the best configuration's proven lower bound instead
    # (also the bound of a greedy plan: configurations cut off by it cannot do better).
    least = min(b.objective_ns for b in dm.bounds)
    first.objective = ev.objective_ns
    if first.bound is None:
        first.bound = least
    elif unproven:
        first.bound = min(first.bound, least)
    proven = first.status == "optimal" and second and second.status == "optimal" and not unproven
    result = SolveResult("optimal" if proven else "feasible", plan, ev, first, second,
                         time.perf_counter() - start, len(dm.data.cfgs))
    if unproven:
        result.extra["unproven_placement_layers"] = unproven
    if first.status != "optimal" and first.status != "feasible":
        result.extra["greedy"] = True
    return result


def greedy_result(inst: Instance, progress: Progress, start: float) -> SolveResult | None:
    """The greedy plan of an abandoned build as a "feasible" result, its bound the least
    lower bound of the configurations still in play (those pruned cannot do better); None
    when the plan misses a requirement after all."""
    greedy = progress.greedy
    deg = progress.cfgs[greedy.index].deg
    ranks = greedy.placement[deg.ep]
    placement = {layer: tuple(tuple(sorted(experts)) for experts in ranks[i])
                 for i, layer in enumerate(inst.model.moe_layer_ids)}
    plan = Plan(inst.name, deg, tuple(tuple(layers) for layers in stages_of(greedy.counts)), placement,
                megatron_layout(deg, inst.hardware.gpus_per_node))
    ev = evaluate(inst, plan)
    if not ev.feasible:
        return None
    least = min(bound.objective_ns for bound in progress.bounds)
    first = PhaseResult("unknown", ev.objective_ns, min(least, ev.objective_ns), 0.0)
    result = SolveResult("feasible", plan, ev, first, None, time.perf_counter() - start, len(progress.cfgs))
    result.extra["greedy"] = True
    loads = expert_loads(inst)
    unproven = [layer for row, layer, experts in zip(loads, inst.model.moe_layer_ids, ranks)
                if 1 < deg.ep < len(row) and hot_load(row, experts) > hot_load_lower_bound(row, deg.ep)]
    if unproven:
        result.extra["unproven_placement_layers"] = unproven
    return result


def no_plan(settings: SolverSettings, budget: Budget, why: str = ""):
    """Raise NoSolutionError (exit 4), or KeyboardInterrupt after a Ctrl-C."""
    if budget.interrupted:
        raise KeyboardInterrupt  # Ctrl-C before any plan was found: stop as usual
    raise NoSolutionError(
        f"no feasible plan found within the time limit of {settings.time_limit_s:g} s{why}",
        {"status": "unknown", "bounds": {}, "conflicts": []})


def greedy_fallback(inst: Instance, dm: DeploymentModel) -> Plan | None:
    """The greedy warm start as a plan (it meets every requirement), or None."""
    greedy = dm.greedy
    if greedy is None:
        return None
    deg = dm.data.cfgs[greedy.index].deg
    stages = tuple(tuple(layers) for layers in stages_of(greedy.counts))
    ranks = greedy.placement[deg.ep]
    placement = {layer: tuple(tuple(sorted(experts)) for experts in ranks[i])
                 for i, layer in enumerate(dm.data.moe_ids)}
    return Plan(inst.name, deg, stages, placement, megatron_layout(deg, inst.hardware.gpus_per_node))


__all__ = ["solve", "SolveResult", "SolverSettings", "explain_infeasible", "smallest_gpu_count",
           "ns_to_ms", "ns_to_s"]
