"""Timing of ``moeopt sweep`` and ``moeopt pareto`` on an instance (whole processes).

Prints, each as the median of ``--runs`` (default 3) fresh processes, with min and max:
(a) ``moeopt sweep INSTANCE --gpus 8,16,32,64,128 --jobs 2 --output TMP`` (target <= 20 s),
    and, for comparison, the same with ``--jobs 1``;
(b) ``moeopt pareto INSTANCE --format json`` (target <= 10 s), with the number of front
    points and whether every one is proven optimal;
then the sweep's summary table (best plan per GPU count) and the smallest GPU count that
meets every requirement against the instance's own ``hardware.num_gpus`` (the seed
deployment's 64 for ``10b_moe``). Exits 1 when a target is missed or a point is unproven.

    python -m benchmarks.bench_sweep [instances/10b_moe.json] [--runs 3] [--gpus 8,16,32,64,128]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCE = REPO / "instances" / "10b_moe.json"
SWEEP_TARGET_S = 20.0
PARETO_TARGET_S = 10.0


def moeopt_command() -> list[str]:
    """The installed ``moeopt`` entry point, else the CLI under this interpreter."""
    exe = shutil.which("moeopt", path=str(Path(sys.executable).parent)) or shutil.which("moeopt")
    if exe:
        return [exe]
    return [sys.executable, "-c", "from optimizer.cli import main; main()"]


def timed(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(moeopt_command() + args, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"moeopt {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return wall, done


def fmt(times: list[float]) -> str:
    return (f"median {statistics.median(times):6.2f} s  (min {min(times):.2f}, max {max(times):.2f}, "
            f"runs {', '.join(f'{t:.2f}' for t in times)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("instance", nargs="?", default=str(DEFAULT_INSTANCE))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gpus", default="8,16,32,64,128")
    ap.add_argument("--skip-jobs1", action="store_true", help="do not time --jobs 1")
    opts = ap.parse_args()
    instance = Path(opts.instance).resolve()
    seed_gpus = json.loads(instance.read_text())["hardware"]["num_gpus"]
    print(f"instance {instance.relative_to(REPO) if instance.is_relative_to(REPO) else instance}, "
          f"GPU counts {opts.gpus}, {opts.runs} runs each, {os.cpu_count()} CPUs, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        sweep_s, last_out = [], None
        for k in range(opts.runs):
            last_out = Path(tmp) / f"sweep-j2-{k}"
            wall, _ = timed(["sweep", str(instance), "--gpus", opts.gpus, "--jobs", "2",
                             "--output", str(last_out)])
            sweep_s.append(wall)
        print(f"sweep --jobs 2: {fmt(sweep_s)}   target <= {SWEEP_TARGET_S:g} s: "
              f"{'ok' if statistics.median(sweep_s) <= SWEEP_TARGET_S else 'MISSED'}")
        if statistics.median(sweep_s) > SWEEP_TARGET_S:
            failed.append("sweep time")
        if not opts.skip_jobs1:
            j1 = []
            for k in range(opts.runs):
                out = Path(tmp) / f"sweep-j1-{k}"
                wall, _ = timed(["sweep", str(instance), "--gpus", opts.gpus, "--output", str(out)])
                j1.append(wall)
            same = (out / "sweep.csv").read_bytes() == (last_out / "sweep.csv").read_bytes()
            print(f"sweep --jobs 1: {fmt(j1)}   (table identical to --jobs 2: {same})")
            if not same:
                failed.append("jobs 1 and jobs 2 tables differ")
                t1, t2 = pd.read_csv(out / "sweep.csv"), pd.read_csv(last_out / "sweep.csv")
                print("  --jobs 1 rows:\n" + t1.to_string(index=False))
                print("  --jobs 2 rows:\n" + t2.to_string(index=False))

        pareto_s, records = [], []
        for _ in range(opts.runs):
            wall, done = timed(["pareto", str(instance), "--format", "json"])
            pareto_s.append(wall)
            records = json.loads(done.stdout)
        proven = all(r.get("proven") is True for r in records)
        print(f"pareto        : {fmt(pareto_s)}   target <= {PARETO_TARGET_S:g} s: "
              f"{'ok' if statistics.median(pareto_s) <= PARETO_TARGET_S else 'MISSED'}; "
              f"{len(records)} front points on {seed_gpus} GPUs, every one proven: {proven}")
        if statistics.median(pareto_s) > PARETO_TARGET_S:
            failed.append("pareto time")
        if not proven or not records:
            failed.append("pareto points not proven")

        summ = pd.read_csv(last_out / "sweep-summary.csv")
        table = pd.read_csv(last_out / "sweep.csv")
        cols = ["num_gpus", "meets_requirements", "status", "degrees", "ttft_s",
                "throughput_tokens_per_ms", "throughput_tokens_per_ms_per_gpu", "max_memory_gb"]
        print("\nBest plan per GPU count (sweep-summary.csv)")
        print(summ[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        meets = summ.loc[summ["meets_requirements"].astype(bool), "num_gpus"]
        smallest = int(meets.min()) if len(meets) else None
        print(f"\nsmallest GPU count meeting every requirement: {smallest if smallest else 'none'} "
              f"(the instance's deployment uses {seed_gpus}"
              + (f"; {seed_gpus / smallest:.0f}x fewer GPUs" if smallest and smallest < seed_gpus else "")
              + ")")
        front = table[table["pareto"].astype(bool)]
        print(f"sweep table: {len(table)} rows, {len(front)} on the front across counts, "
              f"rows per count {table.groupby('num_gpus').size().to_dict()}")
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
