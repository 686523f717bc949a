"""Why an instance is infeasible, and the fewest GPUs on which it is not.

``explain_infeasible`` names the requirements that conflict (CP-SAT assumptions, shrunk by
``minimal_conflict`` until each is needed), their physical bounds (``requirement_bounds``) and
how far the best plan gets without them, as sentences (``conflict_sentence``).
``smallest_gpu_count`` tries GPU counts in order until some plan meets every requirement.
Every step shares one Budget: steps it leaves no time for are skipped.
"""

from __future__ import annotations

import logging

from ortools.sat.python import cp_model

from optimizer.costs import physical_bounds as bounds
from optimizer.costs.timing import makespan_limit_ns
from optimizer.cpsat.budget import Budget, OutOfTime, building
from optimizer.cpsat.model import REQUIREMENTS
from optimizer.cpsat.search import (
    DataBuilder,
    OutOfRange,
    SolverSettings,
    build_model,
    extract_plan,
    make_solver,
    run_phase,
    run_search,
)
from optimizer.errors import InfeasibleError, InputError
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Plan, evaluate

log = logging.getLogger(__name__)


def is_feasible(inst: Instance, gpus: int, settings: SolverSettings, budget: Budget | None = None) -> bool:
    """True when some plan on ``gpus`` GPUs meets every requirement (no explanation); the
    build and the solve stay within ``budget`` (OutOfTime when it is used up)."""
    budget = budget or Budget(settings.time_limit_s)
    try:
        with building(budget):
            dm = build_model(DataBuilder(inst, gpus).data(), cutoff="objective")
    except InputError:
        return False
    if dm.empty:
        return False
    dm.model.minimize(dm.objective)
    return run_phase(make_solver(settings, budget.left()), dm.model, budget).objective is not None


def smallest_gpu_count(inst: Instance, limit: int | None = None) -> int | None:
    """Fewest GPUs (up to the cluster's) on which some plan meets every requirement; None
    when there is none, or when the instance's time limit, shared by the whole search,
    runs out first (a 4,096-GPU cluster may need thousands of builds)."""
    settings = SolverSettings.of(inst)
    budget = Budget(settings.time_limit_s)
    try:
        for gpus in range(1, (limit or inst.hardware.num_gpus) + 1):
            if is_feasible(inst, gpus, settings, budget):
                return gpus
    except OutOfTime:
        log.info("smallest GPU count: the time limit of %g s ran out", settings.time_limit_s)
    return None


def best_makespan(builder: DataBuilder, settings: SolverSettings, budget: Budget,
                  relax: tuple[str, ...]) -> tuple[int | None, Plan | None]:
    """Smallest makespan (ns) with the requirements in ``relax`` dropped, and its plan
    (None, None when there is none or no time)."""
    try:
        with building(budget):
            dm = build_model(builder.data(), relax=relax, cutoff="makespan")
        if dm.empty:
            return None, None
        dm.model.minimize(dm.makespan)
        solver = make_solver(settings, budget.left())
        result = run_phase(solver, dm.model, budget)
    except (OutOfTime, OutOfRange):  # the infeasibility stands; this part of its story is left out
        return None, None
    if result.objective is None:
        return None, None
    return result.objective, extract_plan(builder.inst, dm, solver)


def explain_infeasible(inst: Instance, gpus: int, settings: SolverSettings, budget: Budget | None = None,
                       builder: DataBuilder | None = None) -> InfeasibleError:
    """Name the requirements that conflict (CP-SAT assumptions), their physical bounds and
    how far the best plan gets without them. Every step shares ``budget``'s deadline;
    steps it leaves no time for are skipped (the conflict set is then sufficient but
    perhaps not minimal, and the best plan without the requirements is not given)."""
    budget = budget or Budget(settings.time_limit_s)
    builder = builder or DataBuilder(inst, gpus)
    conflicts, minimal = minimal_conflict(inst, gpus, settings, budget, builder)
    info = requirement_bounds(inst, gpus)
    timing = tuple(name for name in conflicts if name != "memory")
    best_ns, best_plan = (None, None)
    if timing and not budget.expired:
        best_ns, best_plan = best_makespan(builder, settings, budget, timing)
    if best_ns is not None and best_plan is not None:
        ev = evaluate(inst, best_plan)
        info["best_plan"] = {"degrees": degrees_dict(best_plan), **ev.metrics()}
    parts = [conflict_sentence(inst, gpus, name, info, [other for other in conflicts if other != name])
             for name in conflicts]
    if timing and "best_plan" in info:
        best = info["best_plan"]
        names = " and ".join(timing)
        parts.append(f"the best plan without the {names} requirement reaches {best['throughput_tokens_per_ms']:.1f} "
                     f"tokens/ms ({best['throughput_tokens_per_ms_per_gpu']:.2f} per GPU), TTFT {best['ttft_s']:.3f} s")
    if not minimal:
        parts.append("(the time limit stopped the explanation before these requirements were "
                     "shown to be all needed)")
    message = "infeasible: " + "; ".join(parts)
    payload = {"status": "infeasible", "explanation": message, "conflicts": conflicts,
               "conflicts_minimal": minimal, "bounds": info}
    return InfeasibleError(message, payload)


def conflict_core(builder: DataBuilder, settings: SolverSettings, budget: Budget,
                  relax: tuple[str, ...]) -> tuple[int, list[str]]:
    """CP-SAT's status on the requirements not relaxed (as assumptions) and, when
    INFEASIBLE, a sufficient set of them that conflict."""
    try:
        with building(budget):
            dm = build_model(builder.data(), explain=True, relax=relax)
        solver = make_solver(settings, budget.left())
        status = run_search(solver, dm.model, budget)
    except (OutOfTime, OutOfRange):
        return cp_model.UNKNOWN, []
    if status != cp_model.INFEASIBLE:
        return status, []
    names = {var.index: name for name, var in dm.requirement.items()}
    return status, sorted({names[i] for i in solver.sufficient_assumptions_for_infeasibility() if i in names},
                          key=REQUIREMENTS.index)


def stated_requirements(inst: Instance, gpus: int) -> list[str]:
    """The requirements the instance sets (memory always holds a limit)."""
    return [name for name in REQUIREMENTS if name == "memory" or name in makespan_limit_ns(inst, gpus)]


def minimal_conflict(inst: Instance, gpus: int, settings: SolverSettings, budget: Budget | None = None,
                     builder: DataBuilder | None = None) -> tuple[list[str], bool]:
    """CP-SAT's core, shrunk by deletion until every named requirement is needed, and
    whether it was (False when the deadline cut the shrinking short: the set is still
    sufficient; without any core in time, every requirement the instance sets)."""
    budget = budget or Budget(settings.time_limit_s)
    builder = builder or DataBuilder(inst, gpus)
    stated = stated_requirements(inst, gpus)
    status, core = conflict_core(builder, settings, budget, ())
    core = [name for name in core if name in stated]  # a requirement the instance does not set conflicts with nothing
    if not core:
        return stated, False
    minimal = True
    for name in list(core):
        rest = [other for other in core if other != name]
        if not rest:
            continue
        if budget.expired:
            minimal = False
            break
        status, _ = conflict_core(builder, settings, budget, tuple(r for r in REQUIREMENTS if r not in rest))
        if status == cp_model.INFEASIBLE:
            core = rest  # the others conflict without this one
        elif status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            minimal = False  # no answer in time: this one may not be needed
    return core, minimal


def degrees_dict(plan: Plan) -> dict[str, int]:
    """The plan's parallel degrees and micro-batch count by name."""
    d = plan.deg
    return {"tp": d.tp, "pp": d.pp, "dp": d.dp, "ep": d.ep, "etp": d.etp, "edp": d.edp,
            "micro_batches": d.micro_batches}


def requirement_bounds(inst: Instance, gpus: int) -> dict:
    """Physical bounds on each requirement's metric for ``gpus`` GPUs."""
    wl, m = inst.workload, inst.model
    from optimizer.costs import formulas as cm
    return {
        "prefill_gflop_per_token": cm.prefill_flops_per_token(m, wl.prompt_tokens) / 1e9,
        "max_throughput_tokens_per_ms_at_peak": bounds.max_throughput_tokens_per_ms(inst, gpus, True),
        "max_throughput_tokens_per_ms_at_efficiency": bounds.max_throughput_tokens_per_ms(inst, gpus, False),
        "min_ttft_s": bounds.min_ttft_s(inst, gpus),
        "min_memory_per_gpu_gb": bounds.min_memory_per_gpu_gb(inst, gpus),
    }
def conflict_sentence(inst: Instance, gpus: int, name: str, info: dict, others: list[str]) -> str:
    """One requirement's part of the explanation: 'out of reach' only when a physical
    bound rules it out by itself, else which other requirements it conflicts with."""
    req, gpu = inst.requirements, inst.hardware.gpu
    with_others = f"together with the {' and '.join(others)} requirement" if others else ""
    if name == "throughput":
        per_gpu = req.throughput_scope == "per_gpu"
        div, scope = (gpus, " per GPU") if per_gpu else (1, f" on {gpus} GPUs")
        cap = info["max_throughput_tokens_per_ms_at_efficiency"] / div
        if cap >= req.min_throughput_tokens_per_ms and others:
            return (f"throughput >= {req.min_throughput_tokens_per_ms:g} tokens/ms{scope} cannot be met "
                    f"{with_others} (the compute bound alone would allow {cap:.1f})")
        cause = f"{info['prefill_gflop_per_token']:.3f} GFLOP per prompt token caps"
        if inst.workload.output_tokens:
            cause = cause.removesuffix(" caps") + " and decode steps that read the whole KV cache cap"
        return (f"throughput >= {req.min_throughput_tokens_per_ms:g} tokens/ms{scope} is out of reach: "
                f"{cause} it at {info['max_throughput_tokens_per_ms_at_peak'] / div:.1f} tokens/ms{scope} "
                f"at 100 % of {gpu.peak_tflops:g} TFLOPS and of the HBM bandwidth "
                f"({info['max_throughput_tokens_per_ms_at_efficiency'] / div:.1f} at the instance's "
                f"{gpu.compute_efficiency:.0%} compute and {gpu.hbm_efficiency:.0%} bandwidth efficiency)")
    if name == "tpot":
        return (f"TPOT <= {req.max_tpot_ms:g} ms cannot be met{' ' + with_others if others else ''}: "
                f"one decode step reads every GPU's share of the weights and of the KV cache")
    if name == "ttft":
        if info["min_ttft_s"] < req.max_ttft_s and others:
            return (f"TTFT < {req.max_ttft_s:g} s cannot be met {with_others} (the compute bound "
                    f"alone would allow {info['min_ttft_s']:.3f} s)")
        return (f"TTFT < {req.max_ttft_s:g} s is out of reach: the batch needs at least "
                f"{info['min_ttft_s']:.3f} s on {gpus} GPUs at {gpu.compute_efficiency:.0%} efficiency")
    return (f"memory <= {inst.memory_limit_gb:g} GB per GPU conflicts: weights and KV cache alone need "
            f"{info['min_memory_per_gpu_gb']:.2f} GB per GPU on {gpus} GPUs even if spread perfectly, "
            f"before activations, buffers and the runtime reserve")
