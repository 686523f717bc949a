"""Whole-process time of ``moeopt solve`` on service instances (issue 13, item 9: <= 10 s on
the 2-core machine): the shipped Qwen3-30B-A3B on 8 x H200, and DeepSeek-V3 (FP8) on 16 x H100,
made here from the shipped DeepSeek-V3 service (same model, workload and SLOs) on the
``h100-sxm`` preset. Prints the median wall and CPU (user + system of the child) over the
runs, the plan's status and its goodput, so a faster build can be checked for the same plan.

    python -m benchmarks.bench_service_speed [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QWEN3 = "instances/qwen3_30b_a3b_h200_service.json"
DEEPSEEK_H200 = "instances/deepseek_v3_fp8_h200_service.json"


def deepseek_h100_16(folder: Path) -> Path:
    """DeepSeek-V3's shipped service on 16 x H100 instead of 8 x H200."""
    doc = json.loads(Path(DEEPSEEK_H200).read_text())
    doc["name"] = "deepseek_v3_fp8_h100_16_service"
    doc["hardware"] = {"preset": "h100-sxm", "num_gpus": 16}
    path = folder / f"{doc['name']}.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def one_run(instance: Path, out: Path) -> tuple[float, float, dict]:
    """(wall s, CPU s, plan) of one whole ``moeopt solve`` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "moeopt"), "solve", str(instance), "--output", str(out)],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONHASHSEED": "0"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for instance in (Path(QWEN3), deepseek_h100_16(folder)):
            runs = [one_run(instance, folder / "plan.json") for _ in range(args.runs)]
            plan = runs[-1][2]
            d, m = plan["degrees"], plan["metrics"]
            print(f"{instance.stem}: whole process median {statistics.median(r[0] for r in runs):.2f} s wall "
                  f"({min(r[0] for r in runs):.2f}-{max(r[0] for r in runs):.2f}), "
                  f"{statistics.median(r[1] for r in runs):.2f} s CPU, {args.runs} runs; {plan['status']}, "
                  f"tp{d['tp']} pp{d['pp']} dp{d['dp']} ep{d['ep']}, goodput {m['goodput_rps']:.4g} req/s, "
                  f"{plan['solver']['candidates']} candidates, "
                  f"{plan['solver']['groups_skipped_by_bounds']} groups skipped", flush=True)


if __name__ == "__main__":
    main()
