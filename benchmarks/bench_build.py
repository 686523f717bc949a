"""Model build time against search time, before and after, in one run; and short limits.

(a) For every shipped instance and three generated ones (DeepSeek-V3 on 64 GPUs with
power-law loads; a Kimi-K2-like 384-expert DeepSeek-V3 with heavy skew on 16 GPUs;
DeepSeek-V3 with decode on 1,024 H200 GPUs), prints the median over ``--runs`` fresh
processes of: the cost tables, the rest of the build (pruning, greedy plan, constraint
families) and the phase-1 CP-SAT search (one worker), for the tree of ``--before`` (a git
ref, extracted with ``git archive`` into a temporary folder; default: the commit before
the fast build) and for this tree, and whether both built the same model (the phase-1
protobuf without its solution hint, hashed).
(b) ``moeopt solve --time-limit 1`` (this tree) on every instance: exit code, status, gap
and the whole process's wall time.

    python -m benchmarks.bench_build [--runs 3] [--before c47a5fa] [--skip-before] [--short-only]

The machine's load (``os.getloadavg``) is printed first: wall times on a busy machine are
longer; compare the two columns of one run. "build CPU s" is the build's CPU time in its
process (``time.process_time``), which a busy machine changes far less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BEFORE = "c47a5fa"  # main before the fast build

# Runs in a fresh interpreter inside a tree (cwd and sys.path): times one build and search.
PROBE = r"""
import hashlib, json, sys, time
sys.path.insert(0, ".")
t0 = time.perf_counter()
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.cpsat.search import DataBuilder, SolverSettings, build_model, make_solver, run_phase
t_import = time.perf_counter() - t0
inst = load_model(sys.argv[1], Instance, "instance")
t1 = time.perf_counter()
c1 = time.process_time()
builder = DataBuilder(inst, inst.hardware.num_gpus)
data = builder.data()
t2 = time.perf_counter()
dm = build_model(data, cutoff="objective")
if not dm.empty:
    dm.model.minimize(dm.objective)
t3 = time.perf_counter()
c3 = time.process_time()
status = "empty"
if not dm.empty:
    result = run_phase(make_solver(SolverSettings(60.0, 1, 0), 60.0), dm.model)
    status = result.status
t4 = time.perf_counter()
bare = dm.model.clone()
bare.clear_hints()  # the model without its warm start
print(json.dumps({"import_s": t_import, "tables_s": t2 - t1, "prune_model_s": t3 - t2, "search_s": t4 - t3,
                  "build_cpu_s": c3 - c1,
                  "status": status, "configurations": len(dm.data.cfgs),
                  "model": hashlib.sha256(str(bare.proto).encode()).hexdigest()[:12]}))
"""


def generated_instances(folder: Path) -> list[Path]:
    """The three generated cases, written into ``folder``, from the shipped DeepSeek-V3."""
    base = json.loads((REPO / "instances" / "deepseek_v3_fp8_h200.json").read_text())
    out = []

    def write(name: str, edit) -> None:
        doc = json.loads(json.dumps(base))
        doc["name"] = name
        edit(doc)
        path = folder / f"{name}.json"
        path.write_text(json.dumps(doc))
        out.append(path)

    def ds64(doc):
        doc["hardware"]["num_gpus"] = 64
        doc["expert_load"] = {"kind": "power_law", "exponent": 0.6, "seed": 2026}

    def kimi(doc):
        doc["hardware"]["num_gpus"] = 16
        doc["model"]["num_experts"] = 384
        doc["expert_load"] = {"kind": "power_law", "exponent": 1.2, "seed": 7}

    def big(doc):
        doc["hardware"]["num_gpus"] = 1024

    write("deepseek_v3_64gpu_skewed", ds64)
    write("kimi_k2_like_16gpu_skewed", kimi)
    write("deepseek_v3_1024gpu", big)
    return out


def pinned(instance: Path, folder: Path) -> Path:
    """A copy of ``instance`` with ``search.workers`` = 1, which every tree accepts (the
    automatic 0 is new); the probe's search uses one worker anyway."""
    doc = json.loads(instance.read_text())
    doc.setdefault("search", {})["workers"] = 1
    path = folder / f"pinned_{instance.name}"
    path.write_text(json.dumps(doc))
    return path


def probe(tree: Path, instance: Path, runs: int) -> dict:
    """Median timings of ``runs`` fresh processes in ``tree``."""
    rows = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", PROBE, str(instance)], cwd=tree, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(tree)})
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
        rows.append(json.loads(done.stdout))
    out = {key: statistics.median(r.get(key, float("nan")) for r in rows)
           for key in ("import_s", "tables_s", "prune_model_s", "search_s", "build_cpu_s")}
    out.update({key: rows[0][key] for key in ("status", "configurations", "model")})
    return out


def short_limit(instance: Path) -> str:
    """``moeopt solve INSTANCE --time-limit 1`` in this tree: exit, status, gap, wall."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "optimizer.cli", "solve", str(instance), "--time-limit", "1",
                           "--format", "json"], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return f"exit {done.returncode} in {wall:.2f} s: {done.stderr.strip()[:80]}"
    solver = json.loads(done.stdout)["solver"]
    gap = solver.get("gap")  # service plans state no gap
    return (f"exit 0 in {wall:.2f} s: {solver['status']}" + (f", gap {gap * 100:.3f} %" if gap is not None else "")
            + (" (greedy)" if solver.get("greedy") else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", default=BEFORE, help="git ref of the tree to compare with")
    parser.add_argument("--skip-before", action="store_true", help="time this tree only")
    parser.add_argument("--short-only", action="store_true", help="only (b), the --time-limit 1 runs")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; medians of {args.runs} processes")
    with tempfile.TemporaryDirectory(prefix="bench_build_") as tmp:
        tmp_path = Path(tmp)
        instances = sorted(p for p in (REPO / "instances").glob("*.json") if p.name != "seed_plan.json")
        instances += generated_instances(tmp_path)
        before = None
        if not args.skip_before and not args.short_only:
            before = tmp_path / "before"
            before.mkdir()
            archive = subprocess.run(["git", "archive", args.before], cwd=REPO, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        print(f"{'instance':30} {'tree':6} {'tables s':>9} {'prune+model s':>14} {'build s':>8} {'build CPU s':>11} "
              f"{'search s':>9} {'cfgs':>5} status     model")
        for instance in [] if args.short_only else instances:
            if json.loads(instance.read_text())["workload"].get("kind") == "service":
                print(f"{instance.stem[:30]:30} (a service: built by cpsat.service_solve, not timed here)")
                continue
            for label, tree in (("before", before), ("after", REPO)):
                if tree is None:
                    continue
                r = probe(tree, pinned(instance, tmp_path), args.runs)
                if "error" in r:
                    print(f"{instance.stem[:30]:30} {label:6} {r['error']}")
                    continue
                print(f"{instance.stem[:30]:30} {label:6} {r['tables_s']:9.3f} {r['prune_model_s']:14.3f} "
                      f"{r['tables_s'] + r['prune_model_s']:8.3f} {r['build_cpu_s']:11.3f} {r['search_s']:9.3f} "
                      f"{r['configurations']:5d} "
                      f"{r['status']:10} {r['model']}")
        print("\nmoeopt solve --time-limit 1 (this tree, whole process):")
        for instance in instances:
            print(f"  {instance.stem[:30]:30} {short_limit(instance)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
