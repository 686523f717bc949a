"""The Python API: what the ``moeopt`` commands do, as functions returning typed objects
(``optimizer/__init__.py`` re-exports them lazily; see docs/python-api.md).

Every function takes an instance as a path or an already loaded ``Instance``; errors are the
same exceptions the commands turn into exit codes (``optimizer.errors``: InputError 2,
InfeasibleError 3, NoSolutionError 4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the heavy modules load on first call, not on ``import optimizer``
    import pandas as pd

    from optimizer.cpsat.disagg_solve import DisaggResult
    from optimizer.cpsat.solve import SolveResult
    from optimizer.inputs.schema import Instance
    from optimizer.plan.evaluate import Evaluation, Plan
    from optimizer.simulate.deployment import Deployment
    from optimizer.simulate.engine import Outcome

def load_instance(path: str | PathLike) -> Instance:
    """The instance file at ``path``, validated (InputError naming the field otherwise)."""
    from optimizer.inputs.files import load_model
    from optimizer.inputs.schema import Instance
    return load_model(str(path), Instance, "instance")


def _instance(instance) -> Instance:
    from optimizer.inputs.schema import Instance
    return instance if isinstance(instance, Instance) else load_instance(instance)


def _check_gpus(inst: Instance, gpus: int | None) -> None:
    """InputError (exit 2) when ``gpus`` exceeds the instance's hardware."""
    from optimizer.errors import InputError
    if gpus is not None and gpus > inst.hardware.num_gpus:
        raise InputError(f"--gpus={gpus}: exceeds hardware.num_gpus={inst.hardware.num_gpus}")


def _on_gpus(inst: Instance, gpus: int | None) -> Instance:
    """``inst`` on ``gpus`` GPUs (at most the hardware's)."""
    from optimizer.search.sweep import with_gpus
    _check_gpus(inst, gpus)
    return inst if gpus is None else with_gpus(inst, gpus)


def solve(instance, *, gpus: int | None = None, time_limit_s: float | None = None,
          workers: int | None = None, seed: int | None = None, interruptible: bool = False,
          log_search: bool = False, on_model: Callable | None = None) -> SolveResult:
    """The best plan (``moeopt solve``): a SolveResult with ``status`` ("optimal" or
    "feasible"), ``plan`` (Plan), ``evaluation`` (Evaluation: ``.metrics()``, ``.checks``,
    ``.feasible``), the two CP-SAT phases and ``extra`` (e.g. ``unproven_placement_layers``).
    ``time_limit_s`` bounds the whole call (default: the instance's search.time_limit_s)."""
    from optimizer.cpsat.solve import solve as run_solve
    inst = _instance(instance)
    _check_gpus(inst, gpus)
    return run_solve(inst, gpus, time_limit_s, workers, seed, interruptible=interruptible,
                     log_search=log_search, on_model=on_model)


@dataclass
class CheckReport:
    """``moeopt check``: ``feasible`` (every constraint holds), ``document`` (the JSON the
    command prints: checks, metrics, claims), ``text`` (what it prints as a table) and, for a
    Plan object, its ``evaluation``."""

    feasible: bool
    document: dict
    text: str
    evaluation: Evaluation | None = None


def check(instance, plan: str | PathLike | Plan) -> CheckReport:
    """Every constraint and metric of ``plan`` (a plan file, or a Plan such as
    ``solve(...).plan``) recomputed from the plan alone."""
    from dataclasses import asdict

    from optimizer.plan.evaluate import Plan, evaluate
    inst = _instance(instance)
    if isinstance(plan, Plan):
        from optimizer.output.text import check_lines, metric_lines
        ev = evaluate(inst, plan)
        doc = {"feasible": ev.feasible, "checks": [asdict(c) for c in ev.checks], "metrics": ev.metrics()}
        text = "\n".join(["Checks"] + check_lines(ev.checks) + ["Metrics"] + metric_lines(ev)) + "\n"
        return CheckReport(ev.feasible, doc, text, ev)
    from optimizer.cpsat.solve import smallest_gpu_count
    from optimizer.plan.check import check_plan_file
    doc, text, ok = check_plan_file(inst, str(plan), smallest_gpu_count)
    return CheckReport(ok, doc, text)


def pareto(instance, *, gpus: int | None = None, time_limit_s: float | None = None,
           workers: int | None = None, seed: int | None = None, backend: str = "local",
           address: str | None = None,
           on_progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """The Pareto table (``moeopt pareto --all --format csv``) as a pandas DataFrame: one row
    per computed deployment, ``pareto`` True on the front of the rows meeting every
    requirement, ``feasible`` and ``misses`` saying which requirement a row fails;
    ``attrs["unsolved"]`` counts configurations the time limit left unsolved. ``backend="ray"``
    runs it as one Ray task on the cluster at ``address``. ``on_progress(done, total)`` is
    called after each configuration (local backend)."""
    from optimizer.cpsat.search import SolverSettings
    from optimizer.search.pareto import pareto_table
    inst = _on_gpus(_instance(instance), gpus)
    settings = SolverSettings.of(inst, time_limit_s, workers, seed)
    if backend == "ray":
        from optimizer.search.ray_backend import pareto_on_ray
        return pareto_on_ray(inst, settings, address)
    if backend != "local":
        from optimizer.errors import InputError
        raise InputError(f"--backend={backend}: expected local or ray")
    return pareto_table(inst, None, settings, on_progress=on_progress)


@dataclass
class Simulation:
    """``moeopt simulate``: ``summary`` (the JSON the command writes: latency percentiles,
    goodput, KV use), the first seed's ``outcome`` (per request times) and the ``deployment``."""

    summary: dict
    outcome: Outcome
    deployment: Deployment


def simulate(instance: str | PathLike, plan: str | PathLike, *, requests: int = 10_000, seed: int = 0,
             repeats: int = 1, warmup_fraction: float = 0.1, routing: str = "least-loaded",
             max_running_requests: int | None = None,
             prefill_chunk_tokens: int | None = None) -> Simulation:
    """A discrete-event simulation of the plan file serving the instance file's workload
    (docs/simulator.md); the options are those of ``moeopt simulate``."""
    from optimizer.simulate.run import Settings, run
    settings = Settings(requests, seed, repeats, warmup_fraction, routing, max_running_requests,
                        prefill_chunk_tokens)
    summary, outcome, dep = run(str(Path(instance)), str(Path(plan)), settings)
    return Simulation(summary, outcome, dep)


def solve_disagg(instance, *, gpus: int | None = None, objective: str | None = None,
                 time_limit_s: float | None = None, workers: int | None = None,
                 seed: int | None = None) -> DisaggResult:
    """The best disaggregated deployment of a service (``moeopt solve --mode disagg``): a
    DisaggResult with ``status``, ``evaluation`` (both pools, the transfer; ``.metrics()``,
    ``.pool_metrics(role)``), ``choice`` (candidates, replica counts, CP-SAT phases) and
    ``wall_s`` split by stage. ``plan.pools.disagg_plan_to_json`` writes its plan file."""
    from optimizer.cpsat.disagg_solve import solve_disagg as run
    inst = _instance(instance)
    _check_gpus(inst, gpus)
    return run(inst, gpus, objective, time_limit_s, workers, seed)


def size(instance, rates: list[float], *, gpus_allowed: list[int] | None = None,
         max_gpus: int = 512, max_replica_gpus: int | None = None, mode: str = "both",
         time_limit_s: float | None = None, workers: int | None = None, seed: int | None = None) -> list[dict]:
    """``moeopt size``: per rate ``{"rate_rps", "agg": {...}, "disagg": {...}}`` with the
    fewest GPUs (``num_gpus``, None when no allowed count serves the rate), ``status`` and the
    plan. Allowed counts: ``gpus_allowed``, else the multiples of the node size up to
    ``max_gpus``."""
    from optimizer.search.size import size_rows
    inst = _instance(instance)
    gpn = inst.hardware.gpus_per_node
    allowed = sorted(gpus_allowed) if gpus_allowed else list(range(gpn, max_gpus + 1, gpn))
    path = "." if inst is instance else str(instance)  # a trace is read relative to the file
    return size_rows(inst, path, rates, allowed, max_replica_gpus, mode,
                     time_limit_s if time_limit_s is not None else inst.search.time_limit_s,
                     workers or inst.search.workers, inst.search.seed if seed is None else seed)


__all__ = ["load_instance", "solve", "check", "pareto", "simulate", "solve_disagg", "size", "CheckReport",
           "Simulation"]
