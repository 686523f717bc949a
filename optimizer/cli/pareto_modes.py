"""``moeopt pareto --mode disagg|auto`` on a service: the disaggregated front
(``search.disagg_pareto``), alone or beside the aggregated one in one table."""

from __future__ import annotations

import time

import click

from optimizer.errors import InputError
from optimizer.inputs.schema import Instance


def service_modes(inst: Instance, instance_path: str, mode: str, gpus: int | None, objective: str,
                  time_limit: float | None, workers: int | None, seed: int | None, backend: str,
                  tpot_levels: int | None):
    """(the table, a footer line for table format); warnings on stderr."""
    from optimizer.cli.service import trace_of
    from optimizer.cpsat.disagg_solve import check_disagg_instance
    from optimizer.search.disagg_pareto import DEFAULT_LEVELS, auto_table, disagg_front, disagg_table
    from optimizer.search.service_pareto import service_pareto_table
    from optimizer.search.sweep import with_gpus
    if backend == "ray":
        raise InputError(f"--backend=ray: pareto --mode {mode} runs locally")
    if objective != "goodput":
        raise InputError(f"--objective={objective}: pareto --mode {mode} puts every point at its goodput "
                         "rate under its TPOT level (--objective goodput)")
    if gpus is not None:
        if gpus > inst.hardware.num_gpus:
            raise InputError(f"--gpus={gpus}: exceeds hardware.num_gpus={inst.hardware.num_gpus}")
        inst = with_gpus(inst, gpus)
    check_disagg_instance(inst)
    trace = trace_of(inst, instance_path)
    limit = inst.search.time_limit_s if time_limit is None else time_limit
    start = time.monotonic()
    agg = None
    if mode == "auto":  # the aggregated front first, as --mode agg computes it
        agg = service_pareto_table(inst, trace, "goodput", limit)
        _warn_unsolved(agg.attrs.get("unsolved", 0), limit, "knob group(s) unevaluated (agg)")
    left = max(0.05, limit - (time.monotonic() - start))
    front = disagg_front(inst, trace, tpot_levels or DEFAULT_LEVELS, left, workers, seed)
    _warn_unsolved(front.unsolved, limit, "TPOT level(s) without a CP-SAT answer (disagg)")
    if mode == "auto":
        table = auto_table(agg, agg.attrs["meets"], front, inst.requirements.max_tpot_ms)
    else:
        table = disagg_table(front)
    return table, _footer(inst, front)

def _warn_unsolved(count: int, limit: float, what: str) -> None:
    if count:
        click.echo(f"moeopt: warning: the time limit of {limit:g} s left {count} {what}; the front may "
                   "miss points", err=True)


def _footer(inst: Instance, front) -> str:
    """The levels, and which of them no deployment meets."""
    p = inst.requirements.percentile
    empty = sum(1 for point in front.points if point is None) - front.unsolved
    levels = ", ".join(f"{eps:.4g}" for eps in front.levels_ms)
    line = (f"disagg: TPOT p{p} levels {levels} ms; each point the most output tokens/s per GPU within its "
            "level on at most " f"{inst.hardware.num_gpus} GPUs (optimal, or its gap shown)")
    if empty:
        line += f"; {empty} level(s) without a deployment meeting every requirement"
    return line + "\n"
