"""Solve an instance: lexicographic CP-SAT solve, plan extraction, infeasibility explanation.

Phase 1 minimizes the primary objective (time lost to communication and imbalance);
phase 2 keeps it at its optimum and minimizes the batch makespan (TTFT). A plan is called
"optimal" only when CP-SAT proved both phases optimal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from constraints.pipeline import extract_stages
from constraints.placement import extract, unproven_layers
from optimizer import bounds
from optimizer.errors import InfeasibleError, InputError, NoSolutionError
from optimizer.evaluate import Evaluation, Plan, evaluate
from optimizer.layout import megatron_layout
from optimizer.model import REQUIREMENTS, DeploymentModel, build_context
from optimizer.schema import Instance
from optimizer.units import ns_to_ms, ns_to_s


@dataclass(frozen=True)
class SolverSettings:
    time_limit_s: float
    workers: int
    seed: int

    @staticmethod
    def of(inst: Instance, time_limit_s=None, workers=None, seed=None) -> "SolverSettings":
        s = inst.search
        return SolverSettings(time_limit_s if time_limit_s is not None else s.time_limit_s,
                              workers if workers is not None else s.workers,
                              seed if seed is not None else s.seed)


@dataclass
class PhaseResult:
    status: str
    objective: int | None
    bound: int | None
    wall_s: float

    @property
    def gap(self) -> float | None:
        if self.objective is None or self.bound is None:
            return None
        return 0.0 if self.objective == self.bound else (self.objective - self.bound) / max(1, abs(self.objective))


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


def make_solver(settings: SolverSettings, time_limit_s: float) -> cp_model.CpSolver:
    """A CP-SAT solver with the time limit, workers and seed (deterministic for 1 worker)."""
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, 0.05)
    solver.parameters.num_workers = settings.workers
    solver.parameters.random_seed = settings.seed
    return solver


def _phase(solver: cp_model.CpSolver, model: cp_model.CpModel) -> PhaseResult:
    start = time.perf_counter()
    status = solver.solve(model)
    found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    return PhaseResult(solver.status_name(status).lower(),
                       round(solver.objective_value) if found else None,
                       round(solver.best_objective_bound) if found else None,
                       time.perf_counter() - start)


def _hint_all(model: cp_model.CpModel, solver: cp_model.CpSolver) -> None:
    """Replace the hints by the solver's last solution (a complete hint)."""
    model.clear_hints()
    values = solver.response_proto.solution
    model.proto.solution_hint.vars.extend(range(len(values)))
    model.proto.solution_hint.values.extend(values)


def solve(inst: Instance, num_gpus: int | None = None, time_limit_s: float | None = None,
          workers: int | None = None, seed: int | None = None) -> SolveResult:
    """Best plan for ``inst`` on ``num_gpus`` GPUs (default: the instance's).

    Raises InfeasibleError (exit 3) with the conflicting requirements and bounds, or
    NoSolutionError (exit 4) when the time limit passes with no plan."""
    start = time.perf_counter()
    settings = SolverSettings.of(inst, time_limit_s, workers, seed)
    gpus = num_gpus or inst.hardware.num_gpus
    ctx = build_context(inst, gpus)
    dm = DeploymentModel(ctx, cutoff="objective")
    if dm.empty:
        raise explain_infeasible(inst, gpus, settings)
    model = ctx.model
    model.minimize(ctx.objective)
    solver = make_solver(settings, settings.time_limit_s)
    first = _phase(solver, model)
    if first.status == "infeasible":
        raise explain_infeasible(inst, gpus, settings)
    if first.objective is None:
        raise NoSolutionError(
            f"no feasible plan found within the time limit of {settings.time_limit_s:g} s",
            {"status": "unknown", "bounds": {}, "conflicts": []})
    plan = _extract(inst, ctx, dm, solver)
    second = None
    remaining = settings.time_limit_s - (time.perf_counter() - start)
    if first.status == "optimal" and remaining > 0.05:
        model.add(ctx.objective <= first.objective)
        _hint_all(model, solver)
        model.minimize(ctx.makespan)
        solver2 = make_solver(settings, remaining)
        second = _phase(solver2, model)
        if second.objective is not None:
            plan = _extract(inst, ctx, dm, solver2)
    ev = evaluate(inst, plan)
    unproven = unproven_layers(ctx, plan.deg.ep)
    # The reported objective is the plan's own (exact), never the solver's lower-bounded
    # variable; with unproven fixed placements the solver's bound holds only for those
    # placements, so the bound is the best configuration's proven lower bound instead.
    first.objective = ev.objective_ns
    if unproven:
        first.bound = min(first.bound, min(b.objective_ns for b in dm.bounds))
    proven = first.status == "optimal" and second and second.status == "optimal" and not unproven
    result = SolveResult("optimal" if proven else "feasible", plan, ev, first, second,
                         time.perf_counter() - start, len(ctx.cfgs))
    if unproven:
        result.extra["unproven_placement_layers"] = unproven
    return result


def _extract(inst: Instance, ctx, dm: DeploymentModel, solver: cp_model.CpSolver) -> Plan:
    """The plan of the solver's current solution: degrees, stages, placement, layout."""
    deg = dm.chosen(solver).deg
    return Plan(inst.name, deg, extract_stages(ctx, solver, deg.pp), extract(ctx, solver, deg.ep),
                megatron_layout(deg, inst.hardware.gpus_per_node))


def is_feasible(inst: Instance, gpus: int, settings: SolverSettings) -> bool:
    """True when some plan on ``gpus`` GPUs meets every requirement (no explanation)."""
    try:
        ctx = build_context(inst, gpus)
    except InputError:
        return False
    dm = DeploymentModel(ctx, cutoff="objective")
    if dm.empty:
        return False
    ctx.model.minimize(ctx.objective)
    return _phase(make_solver(settings, settings.time_limit_s), ctx.model).objective is not None


def smallest_gpu_count(inst: Instance, limit: int | None = None) -> int | None:
    """Fewest GPUs (up to the cluster's) on which some plan meets every requirement."""
    settings = SolverSettings.of(inst)
    for gpus in range(1, (limit or inst.hardware.num_gpus) + 1):
        if is_feasible(inst, gpus, settings):
            return gpus
    return None


def _best_makespan(inst: Instance, gpus: int, settings: SolverSettings,
                   relax: tuple[str, ...]) -> tuple[int | None, Plan | None]:
    """Smallest makespan with the requirements in ``relax`` dropped (None if none)."""
    ctx = build_context(inst, gpus)
    dm = DeploymentModel(ctx, relax=relax, cutoff="makespan")
    if dm.empty:
        return None, None
    ctx.model.minimize(ctx.makespan)
    solver = make_solver(settings, settings.time_limit_s)
    result = _phase(solver, ctx.model)
    if result.objective is None:
        return None, None
    return result.objective, _extract(inst, ctx, dm, solver)


def explain_infeasible(inst: Instance, gpus: int, settings: SolverSettings) -> InfeasibleError:
    """Name the requirements that conflict (CP-SAT assumptions), their physical bounds and
    how far the best plan gets without them."""
    conflicts = minimal_conflict(inst, gpus, settings)
    info = requirement_bounds(inst, gpus)
    timing = tuple(r for r in conflicts if r != "memory")
    best_ns, best_plan = _best_makespan(inst, gpus, settings, timing) if timing else (None, None)
    if best_ns is not None and best_plan is not None:
        ev = evaluate(inst, best_plan)
        info["best_plan"] = {"degrees": _deg_dict(best_plan), **ev.metrics()}
    parts = [_conflict_sentence(inst, gpus, r, info, [c for c in conflicts if c != r]) for r in conflicts]
    if timing and "best_plan" in info:
        b = info["best_plan"]
        names = " and ".join(timing)
        parts.append(f"the best plan without the {names} requirement reaches {b['throughput_tokens_per_ms']:.1f} tokens/ms "
                     f"({b['throughput_tokens_per_ms_per_gpu']:.2f} per GPU), TTFT {b['ttft_s']:.3f} s")
    message = "infeasible: " + "; ".join(parts)
    payload = {"status": "infeasible", "explanation": message, "conflicts": conflicts, "bounds": info}
    return InfeasibleError(message, payload)


def _core(inst: Instance, gpus: int, settings: SolverSettings, relax: tuple[str, ...]) -> list[str] | None:
    """A sufficient set of conflicting requirements among those not relaxed (CP-SAT
    assumptions), or None when the rest is feasible."""
    ctx = build_context(inst, gpus)
    DeploymentModel(ctx, explain=True, relax=relax)
    solver = make_solver(settings, settings.time_limit_s)
    if solver.solve(ctx.model) != cp_model.INFEASIBLE:
        return None
    names = {v.index: n for n, v in ctx.req.items()}
    return sorted({names[i] for i in solver.sufficient_assumptions_for_infeasibility() if i in names},
                  key=REQUIREMENTS.index)


def minimal_conflict(inst: Instance, gpus: int, settings: SolverSettings) -> list[str]:
    """CP-SAT's core, shrunk by deletion until every named requirement is needed."""
    core = _core(inst, gpus, settings, ()) or list(REQUIREMENTS)
    for name in list(core):
        rest = [r for r in core if r != name]
        relax = tuple(r for r in REQUIREMENTS if r not in rest)
        if rest and _core(inst, gpus, settings, relax) is not None:
            core = rest
    return core


def _deg_dict(plan: Plan) -> dict[str, int]:
    d = plan.deg
    return {"tp": d.tp, "pp": d.pp, "dp": d.dp, "ep": d.ep, "etp": d.etp, "edp": d.edp,
            "micro_batches": d.micro_batches}


def requirement_bounds(inst: Instance, gpus: int) -> dict:
    """Physical bounds on each requirement's metric for ``gpus`` GPUs."""
    wl, m = inst.workload, inst.model
    from optimizer import costmodel as cm
    return {
        "prefill_gflop_per_token": cm.prefill_flops_per_token(m, wl.prompt_tokens) / 1e9,
        "max_throughput_tokens_per_ms_at_peak": bounds.max_throughput_tokens_per_ms(inst, gpus, True),
        "max_throughput_tokens_per_ms_at_efficiency": bounds.max_throughput_tokens_per_ms(inst, gpus, False),
        "min_ttft_s": bounds.min_ttft_s(inst, gpus),
        "min_memory_per_gpu_gb": bounds.min_memory_per_gpu_gb(inst, gpus),
    }


def _conflict_sentence(inst: Instance, gpus: int, name: str, info: dict, others: list[str]) -> str:
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


__all__ = ["solve", "SolveResult", "SolverSettings", "explain_infeasible", "ns_to_ms", "ns_to_s"]
