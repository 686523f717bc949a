"""Benchmark of disaggregated planning (issue 14): ``moeopt solve --mode auto`` and
``moeopt size``, whole processes, and the agg vs disagg comparison table.

Instances (written to a temporary folder from the shipped ones: their fields already are
ISL 4,000 / OSL 1,000, TTFT <= 2 s and TPOT <= 50 ms at p90; only ``hardware.num_gpus`` is
raised to 512 so that ``--gpus N`` may pick any cluster):
- deepseek: instances/deepseek_v3_fp8_h200_service.json (DeepSeek-V3 FP8, H200, 5 requests/s);
- qwen3: instances/qwen3_30b_a3b_h200_service.json (Qwen3-30B-A3B, H200, 25 requests/s).

Parts:
- auto: ``moeopt solve deepseek --mode auto --gpus 32`` (target <= 30 s), with the time split
  the plan's solver block records (disagg: candidates / CP-SAT / plan; agg: its own solve);
- size: ``moeopt size deepseek --rate-range 5:50:5`` (10 rates; target <= 60 s);
- table: auto on DeepSeek-V3 16 and 32 H200 and Qwen3 8 H200, then ``size`` at 10, 50 and 200
  requests/s for both models (``--time-limit`` each, default 300 s); prints Markdown rows;
- size-table: only the ``size`` rows of the table.

    python -m benchmarks.bench_disagg [--part auto|size|table|size-table|all] [--time-limit 300]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = {"deepseek": "deepseek_v3_fp8_h200_service.json", "qwen3": "qwen3_30b_a3b_h200_service.json"}
LABELS = {"deepseek": "DeepSeek-V3 FP8", "qwen3": "Qwen3-30B-A3B"}


def write_instance(folder: Path, name: str) -> Path:
    doc = json.loads((REPO / "instances" / SOURCES[name]).read_text())
    doc["hardware"]["num_gpus"] = 512
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def run(*args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """(process, wall s, CPU s of the child) of ``moeopt ARGS``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "optimizer.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def auto(folder: Path, name: str, gpus: int, time_limit: float) -> dict:
    inst = write_instance(folder, name)
    plan = folder / f"{name}-{gpus}.json"
    proc, wall, cpu = run("solve", str(inst), "--mode", "auto", "--gpus", str(gpus), "--output", str(plan),
                          "--time-limit", str(time_limit))
    if proc.returncode != 0:
        raise SystemExit(f"solve failed ({proc.returncode}): {proc.stderr}")
    doc = json.loads(plan.read_text())
    return {"wall_s": wall, "cpu_s": cpu, "doc": doc, "stdout": proc.stdout}


def part_auto(folder: Path) -> None:
    out = auto(folder, "deepseek", 32, 60)
    summary = out["doc"]["solver"]["auto"]
    print(f"solve --mode auto, DeepSeek-V3 FP8 on 32 H200: {out['wall_s']:.1f} s wall, {out['cpu_s']:.1f} s CPU, "
          f"load {os.getloadavg()[0]:.1f} (target <= 30 s)")
    for mode in ("agg", "disagg"):
        s = summary[mode]
        print(f"  {mode}: {s.get('wall_s', 0):.1f} s, {s['status']}, {s['goodput_rps_per_gpu']:.4g} requests/s per GPU")
    split = out["doc"]["solver"].get("wall_split_s") if summary["chosen"] == "disagg" else None
    if split:
        print(f"  disagg split: {', '.join(f'{k} {v:.2f} s' for k, v in split.items())}")
    print("\n".join(line for line in out["stdout"].splitlines() if line.startswith(("agg ", "disagg:", "chosen"))))


def part_size(folder: Path) -> None:
    inst = write_instance(folder, "deepseek")
    proc, wall, cpu = run("size", str(inst), "--rate-range", "5:50:5", "--format", "json")
    rows = json.loads(proc.stdout) if proc.stdout.startswith("[") else []
    print(f"size --rate-range 5:50:5 (10 rates), DeepSeek-V3: {wall:.1f} s wall, {cpu:.1f} s CPU, exit "
          f"{proc.returncode}, load {os.getloadavg()[0]:.1f} (target <= 60 s)")
    for r in rows:
        print(f"  {r['rate_rps']:g} req/s: agg {r['agg']['num_gpus']} ({r['agg']['status']}), "
              f"disagg {r['disagg']['num_gpus']} ({r['disagg']['status']})")


def _status(s: dict) -> str:
    return "proven" if s["status"] == "optimal" else f"gap {s.get('gap', 0):.1%}"


def part_table(folder: Path, time_limit: float) -> None:
    print("| model, GPUs | mode | goodput/GPU (req/s) | TTFT p90 (s) | TPOT p90 (ms) | pools and degrees | status |")
    print("|---|---|---|---|---|---|---|")
    for name, gpus in (("deepseek", 16), ("deepseek", 32), ("qwen3", 8)):
        out = auto(folder, name, gpus, time_limit)
        for mode in ("agg", "disagg"):
            s = out["doc"]["solver"]["auto"][mode]
            if s["status"] == "infeasible":
                print(f"| {LABELS[name]}, {gpus} H200 | {mode} | - | - | - | {s['why_not'][:80]} | infeasible |")
                continue
            print(f"| {LABELS[name]}, {gpus} H200 | {mode} | {s['goodput_rps_per_gpu']:.4g} | {s['ttft_p90_s']:.3f} | "
                  f"{s['tpot_p90_ms']:.2f} | {s['shape']} | {_status(s)} |")
        print(f"<!-- {name} {gpus}: {out['wall_s']:.1f} s wall -->", file=sys.stderr)
    print()
    part_size_table(folder, time_limit)


def part_size_table(folder: Path, time_limit: float) -> None:
    """The README's ``size`` table: DeepSeek-V3 and Qwen3 at 10, 50 and 200 requests/s."""
    print("| model | rate (req/s) | agg GPUs | disagg GPUs | disagg pools |")
    print("|---|---|---|---|---|")
    for name in ("deepseek", "qwen3"):
        inst = write_instance(folder, name)
        for rate in (10, 50, 200):
            proc, wall, _ = run("size", str(inst), "--rate", str(rate), "--format", "json",
                                "--time-limit", str(time_limit), "--max-gpus", "512")
            if not proc.stdout.startswith("{"):
                print(f"| {LABELS[name]} | {rate} | ? | ? | exit {proc.returncode}: {proc.stderr.strip()[:80]} |")
                continue
            r = json.loads(proc.stdout)
            cells = []
            for mode in ("agg", "disagg"):
                e = r[mode]
                n = e["num_gpus"]
                if n is None:
                    cells.append(f"none ({e['status']}"
                                 + (f", > {e['ruled_out_gpus']} proven" if e.get("ruled_out_gpus") else "") + ")")
                else:
                    cells.append(f"{n} ({'proven' if e['status'] == 'optimal' else e['status']})")
            print(f"| {LABELS[name]} | {rate} | {cells[0]} | {cells[1]} | {r['disagg'].get('shape', '-')} |")
            print(f"<!-- size {name} {rate}: {wall:.1f} s wall -->", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["auto", "size", "table", "size-table", "all"], default="all")
    parser.add_argument("--time-limit", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.part in ("auto", "all"):
            part_auto(folder)
        if args.part in ("size", "all"):
            part_size(folder)
        if args.part in ("table", "all"):
            part_table(folder, args.time_limit)
        if args.part == "size-table":
            part_size_table(folder, args.time_limit)


if __name__ == "__main__":
    main()
