"""Sweep points as Ray tasks on an existing Ray cluster (optional: pip install -e '.[ray]')."""

from __future__ import annotations

from collections.abc import Iterator

from optimizer.errors import InputError
from optimizer.solve import SolverSettings
from optimizer.sweep import sweep_point


def run_on_ray(inst_json: str, counts: list[int], settings: SolverSettings,
               address: str | None) -> Iterator[dict]:
    """Yield each point as its Ray task finishes (so it can be written at once)."""
    try:
        import ray
    except ImportError:
        raise InputError("--backend=ray: Ray is not installed (pip install -e '.[ray]')") from None
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 include_dashboard=False)
    task = ray.remote(sweep_point)
    pending = [task.remote(inst_json, gpus, settings) for gpus in counts]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])
