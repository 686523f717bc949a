"""Sweeps over GPU counts: solve and Pareto per count, one table, files under results/.

Each count is a *point*: the best plan (or why there is none) and the count's Pareto rows.
A finished point is written atomically to ``results/<name>/sweep-points/<gpus>.json`` as
soon as it is done, so an interrupted sweep keeps every finished point and ``--resume``
skips them. Points run in this process, in ``jobs`` worker processes, or as Ray tasks.

The time limit bounds the whole sweep (process start-up aside): ``point_seconds`` shares it
among the points still to compute, as many at a time as run in parallel; within a point the
solve gets half of the point's time and the Pareto table what is left of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

from optimizer.cpsat.budget import Budget
from optimizer.cpsat.search import SolverSettings
from optimizer.cpsat.solve import solve
from optimizer.errors import InfeasibleError, InputError, MoeoptError
from optimizer.inputs.files import read_json, write_atomic
from optimizer.inputs.schema import Instance
from optimizer.search.pareto import COLUMNS, OBJECTIVES, finish_table, pareto_table, tokens_per_s_per_user

SWEEP_OBJECTIVES = {**OBJECTIVES, "num_gpus": "min"}


def with_gpus(inst: Instance, gpus: int) -> Instance:
    """The same instance on a cluster of ``gpus`` GPUs."""
    hw = inst.hardware.model_copy(update={"num_gpus": gpus})
    return inst.model_copy(update={"hardware": hw})


def point_key(inst_json: str, settings: SolverSettings) -> str:
    """What a point depends on (instance, solver settings, moeopt version), hashed: a
    resumed sweep reuses a point only when it matches."""
    from optimizer import __version__
    text = json.dumps([inst_json, settings.time_limit_s, settings.workers, settings.seed, __version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def point_seconds(time_limit_s: float, todo: int, parallel: int) -> float:
    """Seconds of one point when ``todo`` points share ``time_limit_s``, ``parallel`` at a
    time: the limit over the number of rounds."""
    rounds = -(-max(todo, 1) // max(parallel, 1))
    return time_limit_s / rounds


def sweep_point(inst_json: str, gpus: int, settings: SolverSettings, seconds: float | None = None) -> dict:
    """Solve and Pareto rows for one GPU count (JSON-ready; runs in any process), within
    ``seconds`` (default: the settings' time limit): half for the solve, the rest of it
    for the Pareto table."""
    seconds = settings.time_limit_s if seconds is None else seconds
    budget = Budget(seconds)
    inst = with_gpus(Instance.model_validate_json(inst_json), gpus)
    point: dict = {"num_gpus": gpus, "key": point_key(inst_json, settings)}
    try:
        result = solve(inst, gpus, seconds / 2, settings.workers, settings.seed)
        d = result.plan.deg
        point["best"] = {"status": result.status, "degrees": {"tp": d.tp, "pp": d.pp, "dp": d.dp, "ep": d.ep,
                                                            "etp": d.etp, "edp": d.edp,
                                                            "micro_batches": d.micro_batches},
                         "metrics": result.evaluation.metrics(), "feasible": result.evaluation.feasible}
    except InfeasibleError as exc:
        point["best"] = {"status": "infeasible", "explanation": str(exc),
                         "conflicts": exc.payload.get("conflicts", [])}
    except InputError as exc:
        point["best"] = {"status": "no admissible configuration", "explanation": str(exc)}
    except MoeoptError as exc:
        point["best"] = {"status": "unknown", "explanation": str(exc)}
    try:
        rows = pareto_table(inst, gpus, settings, budget)
    except MoeoptError:  # no admissible configuration, or no time left for any
        rows = pd.DataFrame(columns=COLUMNS)
    if rows.attrs.get("unsolved"):
        point["unsolved"] = rows.attrs["unsolved"]
    point["rows"] = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                     for row in rows.to_dict(orient="records")]
    return point


def _usable(point: object, gpus: int, key: str) -> bool:
    """A point read back from disk is reused only if complete and computed for this input."""
    return (isinstance(point, dict) and point.get("num_gpus") == gpus and point.get("key") == key
            and isinstance(point.get("best"), dict) and isinstance(point.get("rows"), list))


def _die_with_parent() -> None:
    """Pool worker initializer: on Linux, die when the parent dies (even by SIGKILL)."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def point_path(out_dir: Path, gpus: int) -> Path:
    return out_dir / "sweep-points" / f"{gpus}.json"


def run_points(inst: Instance, counts: list[int], out_dir: Path, settings: SolverSettings,
               jobs: int = 1, resume: bool = False, backend: str = "local",
               address: str | None = None,
               on_point: Callable[[int, int, int], None] | None = None) -> dict[int, dict]:
    """Every point of the sweep, computing only those not already on disk (``resume``);
    ``on_point(done, total, gpus)`` is called as each point is kept."""
    points: dict[int, dict] = {}
    todo = []
    payload = inst.model_dump_json()
    key = point_key(payload, settings)
    folder = out_dir / "sweep-points"
    if folder.is_dir():  # temporary files of a write that was killed
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    for gpus in counts:
        path = point_path(out_dir, gpus)
        if resume and path.is_file():
            try:
                point = read_json(path, "sweep point")
            except InputError:
                point = None  # a damaged (or hostile) point is computed again
            if _usable(point, gpus, key):
                points[gpus] = point
                continue
        todo.append(gpus)

    def keep(point: dict) -> None:
        points[point["num_gpus"]] = point
        write_atomic(point_path(out_dir, point["num_gpus"]), json.dumps(point, indent=1) + "\n")
        if on_point is not None:
            on_point(len(points), len(counts), point["num_gpus"])

    if backend == "ray":  # how many tasks run at once is Ray's choice: assume one
        from optimizer.search.ray_backend import run_on_ray
        seconds = point_seconds(settings.time_limit_s, len(todo), 1)
        for point in run_on_ray(sweep_point, payload, todo, settings, address, seconds):
            keep(point)
    elif jobs > 1 and len(todo) > 1:
        seconds = point_seconds(settings.time_limit_s, len(todo), jobs)
        with ProcessPoolExecutor(max_workers=jobs, initializer=_die_with_parent) as pool:
            futures = [pool.submit(sweep_point, payload, g, settings, seconds) for g in todo]
            for fut in as_completed(futures):
                keep(fut.result())
    else:
        seconds = point_seconds(settings.time_limit_s, len(todo), 1)
        for gpus in todo:
            keep(sweep_point(payload, gpus, settings, seconds))
    return points


def sweep_table(points: dict[int, dict]) -> pd.DataFrame:
    """All Pareto rows of all counts; ``pareto`` re-marked with the GPU count as one more
    objective (fewer is better)."""
    rows = [r for g in sorted(points) for r in points[g]["rows"]]
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    return finish_table(pd.DataFrame(rows), SWEEP_OBJECTIVES)


def summary(points: dict[int, dict]) -> pd.DataFrame:
    """One row per count: does its best plan meet every requirement, and with what."""
    out = []
    for g in sorted(points):
        best = points[g]["best"]
        m = best.get("metrics", {})
        deg = best.get("degrees", {})
        decode = {}
        if "tpot_ms" in m:  # the workload decodes
            decode = {"tpot_ms": m["tpot_ms"], "tokens_per_s_per_user": tokens_per_s_per_user(m["tpot_ms"])}
        out.append({"num_gpus": g, "meets_requirements": bool(best.get("feasible", False)),
                    "status": best["status"],
                    "degrees": " ".join(f"{k}{v}" for k, v in deg.items()) or "-",
                    "ttft_s": m.get("ttft_s"), **decode,
                    "throughput_tokens_per_ms": m.get("throughput_tokens_per_ms"),
                    "throughput_tokens_per_ms_per_gpu": m.get("throughput_tokens_per_ms_per_gpu"),
                    "max_memory_gb": m.get("max_memory_gb"),
                    "communication_ms": m.get("communication_ms"),
                    "why_not": best.get("explanation", "")})
    return pd.DataFrame(out)


def smallest_feasible(points: dict[int, dict]) -> int | None:
    ok = [g for g, p in points.items() if p["best"].get("feasible")]
    return min(ok) if ok else None


def write_outputs(table: pd.DataFrame, summ: pd.DataFrame, out_dir: Path) -> list[Path]:
    """sweep.csv, sweep.parquet (when pyarrow is installed), sweep-summary.csv, pareto.png."""
    written = []
    csv_path = out_dir / "sweep.csv"
    write_atomic(csv_path, table.to_csv(index=False))
    written.append(csv_path)
    summary_path = out_dir / "sweep-summary.csv"
    write_atomic(summary_path, summ.to_csv(index=False))
    written.append(summary_path)
    written += _write_parquet(table, out_dir / "sweep.parquet")
    from optimizer.output.plots import pareto_png
    png = out_dir / "pareto.png"
    write_atomic(png, pareto_png(table))
    written.append(png)
    return written


def _write_parquet(table: pd.DataFrame, path: Path) -> list[Path]:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return []
    import io
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    write_atomic(path, buf.getvalue())
    return [path]


def parse_counts(text: str) -> list[int]:
    """'8,16,32' -> [8, 16, 32]; exit 2 on anything else."""
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise InputError(f"--gpus={text!r}: expected comma-separated positive integers") from None
    if not counts or min(counts) < 1 or max(counts) > 65536:
        raise InputError(f"--gpus={text!r}: expected GPU counts between 1 and 65536")
    return counts
