"""DeepSeek-V3 with decode on 1,024, 2,048 and 4,096 H200 GPUs: status, gap and time.

The shipped ``instances/deepseek_v3_fp8_h200.json`` (64 sequences of 4,000 + 1,000 tokens,
TTFT <= 10 s, TPOT <= 50 ms) with ``hardware.num_gpus`` changed and ``search.workers`` left
to its automatic default (``optimizer.cpsat.search.auto_workers``). For each count, runs
``moeopt solve --time-limit LIMIT --format json`` as a whole process and prints the exit
code, wall time, workers chosen, status, gap, throughput and the MoE layers whose placement
is unproven (``solver.unproven_layers``). With ``--compare-workers``, also with ``--workers
1`` and ``--workers 2`` (the measurements behind the automatic choice).

    python -m benchmarks.bench_scale [--limit 60] [--gpus 1024,2048,4096] [--compare-workers]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def instance_for(gpus: int, folder: Path) -> Path:
    """The shipped DeepSeek-V3 H200 instance on ``gpus`` GPUs with automatic workers."""
    doc = json.loads((REPO / "instances" / "deepseek_v3_fp8_h200.json").read_text())
    doc["name"] = f"deepseek_v3_fp8_h200_{gpus}"
    doc["hardware"]["num_gpus"] = gpus
    doc["search"].pop("workers", None)
    path = folder / f"{doc['name']}.json"
    path.write_text(json.dumps(doc))
    return path


def run(instance: Path, limit: float, workers: int | None) -> str:
    """One ``moeopt solve`` process; a line of what it returned."""
    from optimizer.cpsat.search import AUTO_TWO_WORKERS_MIN_CONFIGS, auto_workers
    cmd = [sys.executable, "-m", "optimizer.cli", "solve", str(instance), "--time-limit", str(limit),
           "--format", "json"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return f"exit {done.returncode} in {wall:.1f} s: {done.stderr.strip()[:100]}"
    doc = json.loads(done.stdout)
    solver = doc["solver"]
    chosen = workers if workers is not None else (
        f"auto={auto_workers(solver['configurations'])} (>= {AUTO_TWO_WORKERS_MIN_CONFIGS} cfgs: 2)")
    throughput = doc["metrics"].get("throughput_tokens_per_ms")
    return (f"exit 0 in {wall:5.1f} s, workers {chosen}, {solver['status']:8} gap {solver['gap'] * 100:6.2f} %, "
            f"{solver['configurations']} cfgs, {throughput:.1f} tokens/ms, "
            f"unproven_layers {solver.get('unproven_layers', [])}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=60.0)
    parser.add_argument("--gpus", default="1024,2048,4096")
    parser.add_argument("--compare-workers", action="store_true")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; time limit {args.limit:g} s")
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for gpus in (int(g) for g in args.gpus.split(",")):
            instance = instance_for(gpus, Path(tmp))
            for workers in ((None, 1, 2) if args.compare_workers else (None,)):
                label = "default" if workers is None else f"--workers {workers}"
                print(f"{gpus:5d} GPUs {label:12} {run(instance, args.limit, workers)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
