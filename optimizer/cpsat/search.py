"""Running CP-SAT on a deployment model: solver settings, one stoppable search, one phase of
the lexicographic solve, model builds that turn overflow into OutOfRange, and the plan of a
solution.

Shared by ``solve.py`` (the lexicographic solve), ``explain.py`` (infeasibility) and
``optimizer.search.pareto``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from constraints.pipeline import extract_stages
from constraints.placement import extract
from optimizer.costs.layout import megatron_layout
from optimizer.costs.tables import StageCosts
from optimizer.costs.units import LOAD_SCALE
from optimizer.cpsat.budget import MIN_SOLVE_S, Budget, in_main_thread
from optimizer.cpsat.context import ModelData
from optimizer.cpsat.model import DeploymentModel, build_context, candidate_costs
from optimizer.errors import InputError
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Plan


@dataclass(frozen=True)
class SolverSettings:
    """CP-SAT settings of one command: its time limit (s, for the whole command), workers
    (0: automatic, ``auto_workers``), seed, and ``log_search`` (CP-SAT's search log to stderr)."""

    time_limit_s: float
    workers: int
    seed: int
    log_search: bool = False

    @staticmethod
    def of(inst: Instance, time_limit_s=None, workers=None, seed=None, log_search: bool = False) -> SolverSettings:
        """The instance's ``search`` settings, each overridden when given."""
        s = inst.search
        return SolverSettings(time_limit_s if time_limit_s is not None else s.time_limit_s,
                              workers if workers is not None else s.workers,
                              seed if seed is not None else s.seed, log_search)


@dataclass
class PhaseResult:
    """One CP-SAT solve: status name, objective and bound (ints, the model's units), wall s."""

    status: str
    objective: int | None
    bound: int | None
    wall_s: float

    @property
    def gap(self) -> float | None:
        """(objective - bound) / objective; None without a solution."""
        if self.objective is None or self.bound is None:
            return None
        return 0.0 if self.objective == self.bound else (self.objective - self.bound) / max(1, abs(self.objective))


def _log_to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# Automatic workers (``search.workers`` = 0): two CP-SAT workers for a model choosing among
# at least this many configurations, one below. Measured on 2 busy cores (docs/cpsat-model.md,
# "Workers"): DeepSeek-V3 with decode on 2,048 / 4,096 H200 GPUs, with models of 11 / 28
# configurations, left a 17.9 / 21.9 % gap at 60 s on one worker; two proved 2,048 optimal in
# 33 s and reached 4.9 % on 4,096. Models of 1-2 configurations (every shipped instance,
# DeepSeek-V3 on 64 GPUs, a skewed 384-expert model on 16) run 1.2-3x faster on one worker.
AUTO_TWO_WORKERS_MIN_CONFIGS = 4


def auto_workers(configurations: int | None) -> int:
    """CP-SAT workers for a model over ``configurations`` candidates (None: unknown): 2 from
    AUTO_TWO_WORKERS_MIN_CONFIGS on when the machine has 2 CPUs or more, else 1."""
    many = configurations is not None and configurations >= AUTO_TWO_WORKERS_MIN_CONFIGS
    return 2 if many and (os.cpu_count() or 1) >= 2 else 1


def make_solver(settings: SolverSettings, time_limit_s: float, configurations: int | None = None) -> cp_model.CpSolver:
    """A CP-SAT solver with the time limit, workers and seed (``settings.workers`` = 0:
    ``auto_workers(configurations)``). One worker is deterministic;
    several search in interleaved, deterministic mode (the same answer every run, whatever
    the load of the machine), unless the time limit cuts the search short. With
    ``settings.log_search`` CP-SAT's search log goes to stderr (never stdout)."""
    solver = cp_model.CpSolver()
    workers = settings.workers or auto_workers(configurations)
    solver.parameters.max_time_in_seconds = max(time_limit_s, MIN_SOLVE_S)
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = settings.seed
    if workers > 1:
        solver.parameters.interleave_search = True
    # SIGINT is ours (budget.stop_on_sigint); CP-SAT's own handler would swallow it silently.
    solver.parameters.catch_sigint_signal = False
    if settings.log_search:
        solver.parameters.log_search_progress = True
        solver.parameters.log_to_stdout = False
        solver.log_callback = _log_to_stderr
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
        if not in_main_thread():
            status = solver.solve(model)
        else:
            status = _solve_in_thread(solver, model, budget)
    finally:
        if budget is not None:
            budget.active = None
    if status == cp_model.MODEL_INVALID:
        problem = model.validate() or "MODEL_INVALID"
        if is_range_error(problem):
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
        _stop_until_done(solver, done)
        raise
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["status"]


def _stop_until_done(solver: cp_model.CpSolver, done: threading.Event, wait_s: float = 120.0) -> None:
    """Stop the search in the helper thread and wait until it has returned. The stop is
    repeated: one sent before ``solve()`` has set up its search is lost, and on a busy
    machine the helper thread may not have begun yet when Ctrl-C arrives."""
    end = time.monotonic() + wait_s
    while True:
        solver.stop_search()
        if done.wait(0.1) or time.monotonic() > end:
            return


def run_phase(solver: cp_model.CpSolver, model: cp_model.CpModel, budget: Budget | None = None) -> PhaseResult:
    """One CP-SAT solve of ``model`` (``run_search``) as a PhaseResult: objective and
    bound rounded to the model's integers when a solution was found."""
    start = time.perf_counter()
    status = run_search(solver, model, budget)
    found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    return PhaseResult(solver.status_name(status).lower(),
                       round(solver.objective_value) if found else None,
                       round(solver.best_objective_bound) if found else None,
                       time.perf_counter() - start)


def hint_all(model: cp_model.CpModel, solver: cp_model.CpSolver) -> None:
    """Replace the hints by the solver's last solution (a complete hint)."""
    model.clear_hints()
    values = solver.response_proto.solution
    model.proto.solution_hint.vars.extend(range(len(values)))
    model.proto.solution_hint.values.extend(values)


# What CP-SAT (and its Python layer) says when a number does not fit its 64-bit integers.
_RANGE_ERRORS = ("integer overflow", "do not fall in", "incompatible constructor arguments",
                 "only accept integer values")


def is_range_error(text: str) -> bool:
    """True when CP-SAT's message says a number does not fit its 64-bit integers."""
    return any(marker in text for marker in _RANGE_ERRORS)


_RANGE_FIX = ("raise hardware.gpu.peak_tflops, hardware.gpu.hbm_bandwidth_gb_s or the link bandwidths, "
              "or lower workload.batch_sequences, workload.prompt_tokens or workload.output_tokens")


class OutOfRange(InputError):
    """Exit 2: the instance's times or sizes, in integer ns and bytes, exceed what CP-SAT's
    64-bit integers hold (only absurd hardware or workloads get here)."""

    def __init__(self, detail: str = ""):
        super().__init__(f"instance beyond the solver's 64-bit integer range (ns and bytes){detail}; {_RANGE_FIX}")


def out_of_range(data: ModelData) -> OutOfRange:
    """OutOfRange with the instance's largest stage time and weights."""
    every = range(data.num_layers)
    full = {layer: LOAD_SCALE for layer in data.moe_ids}
    stage_s = max((costs.stage_ns(every, full, True, True) for config in data.cfgs for costs, _ in config.phases),
                  default=0) / 1e9
    weights_gb = max((sum(config.memory.layer_weights) for config in data.cfgs), default=0) / 1e9
    return OutOfRange(f": {data.inst.name} has pipeline stages of up to {stage_s:.3g} s per micro-batch "
                      f"and up to {weights_gb:.3g} GB of layer weights per GPU")


def build_model(data: ModelData, **options) -> DeploymentModel:
    """``DeploymentModel(data, **options)``; numbers beyond CP-SAT's integers are
    OutOfRange (exit 2), not a crash."""
    try:
        return DeploymentModel(data, **options)
    except (TypeError, OverflowError, ValueError) as exc:
        if is_range_error(str(exc)):
            raise out_of_range(data) from None
        raise


class DataBuilder:
    """Model data of one instance and GPU count; the candidate cost tables (the costly part
    of a build) are computed once and shared by the several models an explanation needs."""

    def __init__(self, inst: Instance, gpus: int):
        self.inst, self.gpus = inst, gpus
        self._cfgs: tuple[StageCosts, ...] | None = None

    def data(self) -> ModelData:
        """Fresh ``ModelData`` (loads and limits recomputed, cost tables cached)."""
        if self._cfgs is None:
            self._cfgs = tuple(candidate_costs(self.inst, self.gpus))
        return build_context(self.inst, self.gpus, self._cfgs)


def extract_plan(inst: Instance, dm: DeploymentModel, solver: cp_model.CpSolver) -> Plan:
    """The plan of the solver's current solution: degrees, stages, placement, layout."""
    deg = dm.chosen(solver).deg
    return Plan(inst.name, deg, extract_stages(dm.ctx, solver, deg.pp), extract(dm.ctx, solver, deg.ep),
                megatron_layout(deg, inst.hardware.gpus_per_node))
