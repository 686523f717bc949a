"""Sweep points and Pareto tables as Ray tasks on an existing Ray cluster (optional:
pip install -e '.[ray]'); ``search.size_ray`` sizes rates on the same cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd

from optimizer.cpsat.search import SolverSettings
from optimizer.errors import InputError
from optimizer.inputs.schema import Instance


def connect(address: str | None):
    """The ``ray`` module, connected to the cluster at ``address`` (None: a local one Ray
    starts); InputError (exit 2) when Ray is missing or nothing answers at the address."""
    try:
        import ray
    except ImportError:
        raise InputError("--backend=ray: Ray is not installed (pip install -e '.[ray]')") from None
    if address and address != "auto" and not ray.is_initialized():
        _reachable(address)
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 include_dashboard=False)
    return ray


def run_on_ray(point: Callable[[str, int, SolverSettings, float], dict], inst_json: str, counts: list[int],
               settings: SolverSettings, address: str | None, seconds: float) -> Iterator[dict]:
    """Yield ``point(inst_json, gpus, settings, seconds)`` for each GPU count as its Ray task
    finishes (so it can be written at once)."""
    ray = connect(address)
    task = ray.remote(point)
    pending = [task.remote(inst_json, gpus, settings, seconds) for gpus in counts]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def pareto_records(inst_json: str, settings: SolverSettings) -> tuple[list[dict], int]:
    """The Pareto table of an instance as (records, unsolved configurations): what a Ray task
    returns (plain Python values travel between processes unchanged)."""
    from optimizer.search.pareto import pareto_table
    table = pareto_table(Instance.model_validate_json(inst_json), None, settings)
    return table.to_dict(orient="records"), int(table.attrs.get("unsolved", 0))


def pareto_on_ray(inst: Instance, settings: SolverSettings, address: str | None) -> pd.DataFrame:
    """``pareto_table(inst, None, settings)`` computed as one Ray task on the cluster at
    ``address``: the same table (columns, order, ``attrs["unsolved"]``) as the local run."""
    from optimizer.search.pareto import table_columns
    ray = connect(address)
    records, unsolved = ray.get(ray.remote(pareto_records).remote(inst.model_dump_json(), settings))
    table = pd.DataFrame(records)
    table = table[table_columns(table)] if len(table) else pd.DataFrame(columns=table_columns(table))
    table.attrs["unsolved"] = unsolved
    return table


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (exit 2) when nothing listens at ``host:port`` (Ray would retry forever)."""
    import socket
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError):
        raise InputError(f"--address={address}: no Ray cluster answers there") from None
