"""Sweep points as Ray tasks on an existing Ray cluster (optional: pip install -e '.[ray]')."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from optimizer.errors import InputError
from optimizer.cpsat.search import SolverSettings


def run_on_ray(point: Callable[[str, int, SolverSettings, float], dict], inst_json: str, counts: list[int],
               settings: SolverSettings, address: str | None, seconds: float) -> Iterator[dict]:
    """Yield ``point(inst_json, gpus, settings, seconds)`` for each GPU count as its Ray task
    finishes (so it can be written at once)."""
    try:
        import ray
    except ImportError:
        raise InputError("--backend=ray: Ray is not installed (pip install -e '.[ray]')") from None
    if address and address != "auto" and not ray.is_initialized():
        _reachable(address)
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 include_dashboard=False)
    task = ray.remote(point)
    pending = [task.remote(inst_json, gpus, settings, seconds) for gpus in counts]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (exit 2) when nothing listens at ``host:port`` (Ray would retry forever)."""
    import socket
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError):
        raise InputError(f"--address={address}: no Ray cluster answers there") from None
