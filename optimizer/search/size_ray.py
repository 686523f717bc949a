"""``moeopt size --backend ray``: one Ray task per rate on the cluster ``ray_backend.connect``
reaches (optional: pip install -e '.[ray]')."""

from __future__ import annotations

from optimizer.inputs.schema import Instance
from optimizer.search.ray_backend import connect
from optimizer.search.size import size_rows


def size_record(inst_json: str, instance_path: str, rate_rps: float, allowed: list[int],
                max_replica_gpus: int | None, mode: str, seconds: float, workers: int, seed: int) -> dict:
    """One rate of ``moeopt size`` (``search.size.size_rows`` of that rate alone): what a Ray
    task returns (plain JSON values)."""
    inst = Instance.model_validate_json(inst_json)
    return size_rows(inst, instance_path, [rate_rps], allowed, max_replica_gpus, mode, seconds, workers, seed)[0]


def size_on_ray(inst: Instance, instance_path: str, rates: list[float], allowed: list[int],
                max_replica_gpus: int | None, mode: str, seconds: float, workers: int, seed: int,
                address: str | None) -> list[dict]:
    """``size_rows`` with one Ray task per rate on the cluster at ``address``, rows in the
    order of ``rates``. Each task gets the whole time limit (they run side by side) and sizes
    its rate alone, as ``moeopt size --rate R`` does locally: the fewest GPUs and their status
    agree with the local run when both are proven; the plan may be another of the same GPU
    count (a tie CP-SAT's workers break either way)."""
    ray = connect(address)
    task = ray.remote(size_record)
    inst_json = inst.model_dump_json()
    return ray.get([task.remote(inst_json, instance_path, r, allowed, max_replica_gpus, mode, seconds,
                                workers, seed) for r in rates])
