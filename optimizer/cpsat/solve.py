"""Solve an instance: lexicographic CP-SAT solve, plan extraction, infeasibility explanation.

Phase 1 minimizes the primary objective (time lost to communication and imbalance);
phase 2 keeps it at its optimum and minimizes the batch makespan (TTFT). A plan is called
"optimal" only when CP-SAT proved both phases optimal.

Time limit and Ctrl-C: one ``Budget`` per ``solve()`` call holds the deadline that every
CP-SAT solve of the call shares (phase 1, phase 2 and each step of an infeasibility
explanation get what is left of it, not the full limit each). A model build (Python, which
CP-SAT's limit cannot stop) is abandoned once the deadline plus a grace has passed
(``building``). Under ``stop_on_sigint`` the first SIGINT stops the search in progress,
which then returns its best solution, and starts no further solve; the plan found so far
is returned as "feasible" with its gap (a SIGINT during the build stops with
KeyboardInterrupt: there is no plan yet). When CP-SAT found no solution in time, the greedy
warm start is returned if it meets every requirement; only when it does not either is there
no plan (exit 4). Times or sizes beyond CP-SAT's 64-bit integers are OutOfRange (exit 2).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Iterator

from ortools.sat.python import cp_model

from constraints.pipeline import extract_stages
from constraints.placement import extract, unproven_layers
from optimizer.costs import physical_bounds as bounds
from optimizer.costs.config_bounds import stages_of
from optimizer.cpsat.context import Context
from optimizer.errors import InfeasibleError, InputError, NoSolutionError
from optimizer.plan.evaluate import Evaluation, Plan, evaluate
from optimizer.costs.timing import makespan_limit_ns
from optimizer.costs.layout import megatron_layout
from optimizer.costs.expert_loads import expert_loads
from optimizer.cpsat.model import REQUIREMENTS, DeploymentModel, candidate_costs
from optimizer.inputs.schema import Instance
from optimizer.costs.tables import StageCosts
from optimizer.costs.units import LOAD_SCALE, gb_to_bytes_floor, ns_to_ms, ns_to_s

log = logging.getLogger(__name__)

# The shortest CP-SAT run worth starting (s); also the least phase 1 gets when the model
# build already used up the time limit (it then usually finds the hinted greedy plan).
MIN_SOLVE_S = 0.05


class OutOfTime(Exception):
    """Raised into a model build (pure Python, which CP-SAT's limit cannot stop) when the
    deadline plus its grace passes, or on Ctrl-C."""


class Budget:
    """The time limit of one ``solve()`` call as a deadline shared by all its CP-SAT solves,
    and its Ctrl-C state. ``interrupt()`` (called by the SIGINT handler of
    ``stop_on_sigint``) stops the active search and leaves no time for any later one.
    Model builds (``building``) may run ``grace`` seconds past the deadline."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.grace = 1.0 + 0.1 * seconds
        self.interrupted = False
        self.building = False
        self.active: cp_model.CpSolver | None = None

    def left(self) -> float:
        """Seconds left before the deadline (0 once interrupted)."""
        return 0.0 if self.interrupted else max(0.0, self.deadline - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.left() < MIN_SOLVE_S

    def interrupt(self) -> None:
        self.interrupted = True
        solver = self.active
        if solver is not None:
            solver.stop_search()  # thread-safe; the search returns its best solution


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_on_sigint(budget: Budget) -> Iterator[Budget]:
    """Within the block, the first SIGINT (Ctrl-C) calls ``budget.interrupt()``: the CP-SAT
    search in progress stops and returns its best solution, and no further solve starts
    (a model build in progress is abandoned: OutOfTime). A second SIGINT raises
    KeyboardInterrupt as usual. The previous handler is restored on leaving. Signals can
    only be handled in the main thread; elsewhere this does nothing."""
    if not _main_thread():
        yield budget
        return

    def on_sigint(signum, frame):
        if budget.interrupted:
            raise KeyboardInterrupt
        budget.interrupt()
        if budget.building:
            raise OutOfTime("interrupted")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield budget
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def building(budget: Budget) -> Iterator[None]:
    """A model build that raises OutOfTime once the deadline plus the grace has passed
    (a SIGALRM timer: Python code stops at its next bytecode). The timer is armed only in
    the main thread and only when nobody else uses SIGALRM; it is disarmed on leaving."""
    left = budget.deadline + budget.grace - time.monotonic()
    if budget.interrupted or left <= 0:
        raise OutOfTime("no time left")
    armed = False
    if _main_thread() and hasattr(signal, "setitimer"):
        previous = signal.getsignal(signal.SIGALRM)
        if previous in (signal.SIG_DFL, signal.SIG_IGN, None) and signal.getitimer(signal.ITIMER_REAL)[0] == 0:

            def on_alarm(signum, frame):
                if budget.building:
                    raise OutOfTime("time limit")

            signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, left)
            armed = True
    budget.building = True
    try:
        yield
    finally:
        budget.building = False
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


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
    """A CP-SAT solver with the time limit, workers and seed. One worker is deterministic;
    several search in interleaved, deterministic mode (the same answer every run, whatever
    the load of the machine), unless the time limit cuts the search short."""
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, MIN_SOLVE_S)
    solver.parameters.num_workers = settings.workers
    solver.parameters.random_seed = settings.seed
    if settings.workers > 1:
        solver.parameters.interleave_search = True
    # SIGINT is ours (stop_on_sigint); CP-SAT's own handler would swallow it silently.
    solver.parameters.catch_sigint_signal = False
    return solver


def run_search(solver: cp_model.CpSolver, model: cp_model.CpModel, budget: Budget | None = None) -> int:
    """``solver.solve(model)``, stoppable at once by ``budget.interrupt()``.

    Python runs signal handlers only in the main thread and only between bytecodes, never
    while ``solve()`` runs native code there; so in the main thread the search runs in a
    helper thread while this one waits (and would handle a SIGINT). A model CP-SAT rejects
    raises OutOfRange (exit 2) when a number overflows its 64-bit integers, else
    RuntimeError (a bug)."""
    solver.parameters.catch_sigint_signal = False
    if budget is not None:
        if budget.interrupted:
            solver.parameters.max_time_in_seconds = 0.0
        budget.active = solver
    try:
        if not _main_thread():
            status = solver.solve(model)
        else:
            status = _solve_in_thread(solver, model, budget)
    finally:
        if budget is not None:
            budget.active = None
    if status == cp_model.MODEL_INVALID:
        problem = model.validate() or "MODEL_INVALID"
        if _is_range_error(problem):
            raise OutOfRange(f" (CP-SAT: {problem.splitlines()[0][:60]})")
        raise RuntimeError(f"CP-SAT rejected the model: {problem}")
    return status


def _solve_in_thread(solver: cp_model.CpSolver, model: cp_model.CpModel, budget: Budget | None) -> int:
    box: dict = {}
    done = threading.Event()

    def target():
        try:
            box["status"] = solver.solve(model)
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=target, name="cp-sat", daemon=True)
    worker.start()
    # Wait on an Event, not Thread.join: a KeyboardInterrupt inside join() leaves the
    # Thread marking itself stopped while it still runs (CPython bpo-45274), and a search
    # still running when the interpreter exits aborts the process.
    try:
        while not done.wait(0.1):
            if budget is not None and budget.interrupted:
                solver.stop_search()  # again: a stop sent before the search began is lost
    except BaseException:  # KeyboardInterrupt or SystemExit: end the search, then leave
        solver.stop_search()
        done.wait(10.0)
        raise
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["status"]


def _phase(solver: cp_model.CpSolver, model: cp_model.CpModel, budget: Budget | None = None) -> PhaseResult:
    start = time.perf_counter()
    status = run_search(solver, model, budget)
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


# What CP-SAT (and its Python layer) says when a number does not fit its 64-bit integers.
_RANGE_ERRORS = ("integer overflow", "do not fall in", "incompatible constructor arguments",
                 "only accept integer values")


def _is_range_error(text: str) -> bool:
    return any(marker in text for marker in _RANGE_ERRORS)


_RANGE_FIX = ("raise hardware.gpu.peak_tflops, hardware.gpu.hbm_bandwidth_gb_s or the link bandwidths, "
              "or lower workload.batch_sequences, workload.prompt_tokens or workload.output_tokens")


class OutOfRange(InputError):
    """Exit 2: the instance's times or sizes, in integer ns and bytes, exceed what CP-SAT's
    64-bit integers hold (only absurd hardware or workloads get here)."""

    def __init__(self, detail: str = ""):
        super().__init__(f"instance beyond the solver's 64-bit integer range (ns and bytes){detail}; {_RANGE_FIX}")


def out_of_range(ctx: Context) -> OutOfRange:
    """OutOfRange with the instance's largest stage time and weights."""
    every = range(ctx.num_layers)
    full = {l: LOAD_SCALE for l in ctx.moe_ids}
    stage_s = max((ph.stage_ns(every, full, True, True) for c in ctx.cfgs for ph, _ in c.phases),
                  default=0) / 1e9
    weights_gb = max((sum(c.memory.layer_weights) for c in ctx.cfgs), default=0) / 1e9
    return OutOfRange(f": {ctx.inst.name} has pipeline stages of up to {stage_s:.3g} s per micro-batch "
                      f"and up to {weights_gb:.3g} GB of layer weights per GPU")


def build_model(ctx: Context, **options) -> DeploymentModel:
    """``DeploymentModel(ctx, **options)``; numbers beyond CP-SAT's integers are OutOfRange
    (exit 2), not a crash."""
    try:
        return DeploymentModel(ctx, **options)
    except (TypeError, OverflowError, ValueError) as exc:
        if _is_range_error(str(exc)):
            raise out_of_range(ctx) from None
        raise


class _Builder:
    """Contexts of one instance and GPU count; the candidate cost tables (the costly part
    of a build) are computed once and shared by the several models an explanation needs."""

    def __init__(self, inst: Instance, gpus: int):
        self.inst, self.gpus = inst, gpus
        self._cfgs: list[StageCosts] | None = None

    def context(self) -> Context:
        if self._cfgs is None:
            self._cfgs = candidate_costs(self.inst, self.gpus)
        inst = self.inst
        return Context(inst=inst, num_gpus=self.gpus, cfgs=list(self._cfgs), loads=expert_loads(inst),
                       limits_ns=makespan_limit_ns(inst, self.gpus),
                       memory_cap_bytes=gb_to_bytes_floor(inst.memory_limit_gb))


def solve(inst: Instance, num_gpus: int | None = None, time_limit_s: float | None = None,
          workers: int | None = None, seed: int | None = None, interruptible: bool = False) -> SolveResult:
    """Best plan for ``inst`` on ``num_gpus`` GPUs (default: the instance's), within the time
    limit for the whole call. With ``interruptible`` (the command line), Ctrl-C stops the
    search and returns the best plan found so far (``extra["interrupted"]``).

    Raises InfeasibleError (exit 3) with the conflicting requirements and bounds, or
    NoSolutionError (exit 4) when the time limit passes with no plan."""
    settings = SolverSettings.of(inst, time_limit_s, workers, seed)
    budget = Budget(settings.time_limit_s)
    log.info("solve %s on %d GPUs: time limit %g s", inst.name, num_gpus or inst.hardware.num_gpus,
             settings.time_limit_s)
    with stop_on_sigint(budget) if interruptible else nullcontext():
        result = _solve(inst, num_gpus or inst.hardware.num_gpus, settings, budget)
    if interruptible and budget.interrupted and result.status == "feasible":
        result.extra["interrupted"] = True
    return result


def _solve(inst: Instance, gpus: int, settings: SolverSettings, budget: Budget) -> SolveResult:
    start = time.perf_counter()
    builder = _Builder(inst, gpus)
    try:
        with building(budget):
            ctx = builder.context()
            dm = build_model(ctx, cutoff="objective")
            if not dm.empty:
                ctx.model.minimize(ctx.objective)
    except OutOfTime:
        _no_plan(settings, budget, " (building the model took all of it)")
    if dm.empty:
        raise explain_infeasible(inst, gpus, settings, budget, builder)
    model = ctx.model
    solver = make_solver(settings, budget.left())
    log.info("phase 1: CP-SAT over %d configuration(s), %.2f s left", len(ctx.cfgs), budget.left())
    first = _phase(solver, model, budget) if not budget.interrupted else PhaseResult("unknown", None, None, 0.0)
    if first.status == "infeasible":
        raise explain_infeasible(inst, gpus, settings, budget, builder)
    second = None
    if first.objective is None:
        plan = _greedy(inst, ctx, dm)
        if plan is None:
            _no_plan(settings, budget)
        log.info("phase 1 found no solution in time: the greedy warm start is the plan")
    else:
        plan = _extract(inst, ctx, dm, solver)
        if first.status == "optimal" and not budget.expired:
            model.add(ctx.objective <= first.objective)
            _hint_all(model, solver)
            model.minimize(ctx.makespan)
            solver2 = make_solver(settings, budget.left())
            log.info("phase 2: makespan at the optimal objective, %.2f s left", budget.left())
            second = _phase(solver2, model, budget)
            if second.objective is not None:
                plan = _extract(inst, ctx, dm, solver2)
    ev = evaluate(inst, plan)
    if first.objective is None and not ev.feasible:
        _no_plan(settings, budget)  # the greedy plan misses a requirement after all
    unproven = unproven_layers(ctx, plan.deg.ep)
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
                         time.perf_counter() - start, len(ctx.cfgs))
    if unproven:
        result.extra["unproven_placement_layers"] = unproven
    if first.status != "optimal" and first.status != "feasible":
        result.extra["greedy"] = True
    return result


def _no_plan(settings: SolverSettings, budget: Budget, why: str = ""):
    if budget.interrupted:
        raise KeyboardInterrupt  # Ctrl-C before any plan was found: stop as usual
    raise NoSolutionError(
        f"no feasible plan found within the time limit of {settings.time_limit_s:g} s{why}",
        {"status": "unknown", "bounds": {}, "conflicts": []})


def _greedy(inst: Instance, ctx: Context, dm: DeploymentModel) -> Plan | None:
    """The greedy warm start as a plan (it meets every requirement), or None."""
    g = dm.greedy
    if g is None:
        return None
    deg = ctx.cfgs[g.index].deg
    stages = tuple(tuple(r) for r in stages_of(g.counts))
    ranks = g.placement[deg.ep]
    placement = {layer: tuple(tuple(sorted(r)) for r in ranks[i]) for i, layer in enumerate(ctx.moe_ids)}
    return Plan(inst.name, deg, stages, placement, megatron_layout(deg, inst.hardware.gpus_per_node))


def _extract(inst: Instance, ctx, dm: DeploymentModel, solver: cp_model.CpSolver) -> Plan:
    """The plan of the solver's current solution: degrees, stages, placement, layout."""
    deg = dm.chosen(solver).deg
    return Plan(inst.name, deg, extract_stages(ctx, solver, deg.pp), extract(ctx, solver, deg.ep),
                megatron_layout(deg, inst.hardware.gpus_per_node))


def is_feasible(inst: Instance, gpus: int, settings: SolverSettings, budget: Budget | None = None) -> bool:
    """True when some plan on ``gpus`` GPUs meets every requirement (no explanation); the
    build and the solve stay within ``budget`` (OutOfTime when it is used up)."""
    budget = budget or Budget(settings.time_limit_s)
    try:
        with building(budget):
            ctx = _Builder(inst, gpus).context()
            dm = build_model(ctx, cutoff="objective")
    except InputError:
        return False
    if dm.empty:
        return False
    ctx.model.minimize(ctx.objective)
    return _phase(make_solver(settings, budget.left()), ctx.model, budget).objective is not None


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


def _best_makespan(builder: _Builder, settings: SolverSettings, budget: Budget,
                   relax: tuple[str, ...]) -> tuple[int | None, Plan | None]:
    """Smallest makespan with the requirements in ``relax`` dropped (None if none or no
    time)."""
    try:
        with building(budget):
            ctx = builder.context()
            dm = build_model(ctx, relax=relax, cutoff="makespan")
        if dm.empty:
            return None, None
        ctx.model.minimize(ctx.makespan)
        solver = make_solver(settings, budget.left())
        result = _phase(solver, ctx.model, budget)
    except (OutOfTime, OutOfRange):  # the infeasibility stands; this part of its story is left out
        return None, None
    if result.objective is None:
        return None, None
    return result.objective, _extract(builder.inst, ctx, dm, solver)


def explain_infeasible(inst: Instance, gpus: int, settings: SolverSettings, budget: Budget | None = None,
                       builder: _Builder | None = None) -> InfeasibleError:
    """Name the requirements that conflict (CP-SAT assumptions), their physical bounds and
    how far the best plan gets without them. Every step shares ``budget``'s deadline;
    steps it leaves no time for are skipped (the conflict set is then sufficient but
    perhaps not minimal, and the best plan without the requirements is not given)."""
    budget = budget or Budget(settings.time_limit_s)
    builder = builder or _Builder(inst, gpus)
    conflicts, minimal = minimal_conflict(inst, gpus, settings, budget, builder)
    info = requirement_bounds(inst, gpus)
    timing = tuple(r for r in conflicts if r != "memory")
    best_ns, best_plan = (None, None)
    if timing and not budget.expired:
        best_ns, best_plan = _best_makespan(builder, settings, budget, timing)
    if best_ns is not None and best_plan is not None:
        ev = evaluate(inst, best_plan)
        info["best_plan"] = {"degrees": _deg_dict(best_plan), **ev.metrics()}
    parts = [_conflict_sentence(inst, gpus, r, info, [c for c in conflicts if c != r]) for r in conflicts]
    if timing and "best_plan" in info:
        b = info["best_plan"]
        names = " and ".join(timing)
        parts.append(f"the best plan without the {names} requirement reaches {b['throughput_tokens_per_ms']:.1f} tokens/ms "
                     f"({b['throughput_tokens_per_ms_per_gpu']:.2f} per GPU), TTFT {b['ttft_s']:.3f} s")
    if not minimal:
        parts.append("(the time limit stopped the explanation before these requirements were "
                     "shown to be all needed)")
    message = "infeasible: " + "; ".join(parts)
    payload = {"status": "infeasible", "explanation": message, "conflicts": conflicts,
               "conflicts_minimal": minimal, "bounds": info}
    return InfeasibleError(message, payload)


def _core(builder: _Builder, settings: SolverSettings, budget: Budget,
          relax: tuple[str, ...]) -> tuple[int, list[str]]:
    """CP-SAT's status on the requirements not relaxed (as assumptions) and, when
    INFEASIBLE, a sufficient set of them that conflict."""
    try:
        with building(budget):
            ctx = builder.context()
            build_model(ctx, explain=True, relax=relax)
        solver = make_solver(settings, budget.left())
        status = run_search(solver, ctx.model, budget)
    except (OutOfTime, OutOfRange):
        return cp_model.UNKNOWN, []
    if status != cp_model.INFEASIBLE:
        return status, []
    names = {v.index: n for n, v in ctx.req.items()}
    return status, sorted({names[i] for i in solver.sufficient_assumptions_for_infeasibility() if i in names},
                          key=REQUIREMENTS.index)


def _stated(inst: Instance, gpus: int) -> list[str]:
    """The requirements the instance sets (memory always holds a limit)."""
    return [r for r in REQUIREMENTS if r == "memory" or r in makespan_limit_ns(inst, gpus)]


def minimal_conflict(inst: Instance, gpus: int, settings: SolverSettings, budget: Budget | None = None,
                     builder: _Builder | None = None) -> tuple[list[str], bool]:
    """CP-SAT's core, shrunk by deletion until every named requirement is needed, and
    whether it was (False when the deadline cut the shrinking short: the set is still
    sufficient; without any core in time, every requirement the instance sets)."""
    budget = budget or Budget(settings.time_limit_s)
    builder = builder or _Builder(inst, gpus)
    stated = _stated(inst, gpus)
    status, core = _core(builder, settings, budget, ())
    core = [r for r in core if r in stated]  # a requirement the instance does not set conflicts with nothing
    if not core:
        return stated, False
    minimal = True
    for name in list(core):
        rest = [r for r in core if r != name]
        if not rest:
            continue
        if budget.expired:
            minimal = False
            break
        status, _ = _core(builder, settings, budget, tuple(r for r in REQUIREMENTS if r not in rest))
        if status == cp_model.INFEASIBLE:
            core = rest  # the others conflict without this one
        elif status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            minimal = False  # no answer in time: this one may not be needed
    return core, minimal


def _deg_dict(plan: Plan) -> dict[str, int]:
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
