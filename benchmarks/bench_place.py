"""Benchmark of ``moeopt place`` on DeepSeek-V3-shape loads and on the 10B seed model.

Cases (fixed seeds, generated here, written to a temporary .npy):
- DeepSeek-V3 shape: 58 MoE layers x 256 routed experts, top-8, 16384 tokens per step
  (131,072 routed token copies per layer); each token picks 8 distinct experts from the
  layer's weights (sampling without replacement, so an expert gets at most 1/8 of them):
  * mild:  lognormal weights, sigma 0.6;
  * heavy: Zipf-like, weight (rank+1)^-s with s ~ U(0.9, 1.2) over a random expert order,
           times lognormal noise sigma 0.2;
  on 32 GPUs in 4 nodes with 32 redundant slots, and on 64 GPUs in 8 nodes with 64.
- 10B: instances/10b_moe.json's synthetic loads, 16 experts on 8 GPUs, no replicas.

Each case runs the whole process ``moeopt place LOADS --ep N --redundant R --nodes K
--workers 2 --time-limit T --format json`` and prints its wall time and CPU time (the
process and its children), the mean and minimum balancedness, the worst gap to the
proven lower bound, the status, and, computed in this process on the same loads, the
greedy EPLB-style baseline (``eplb_greedy``) with the ratio of the two means.

    python -m benchmarks.bench_place [--time-limit 50] [--workers 2] [--only heavy] [--spread]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.oracles.eplb_greedy import balancedness, greedy_place  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LAYERS, EXPERTS, TOP_K, TOKENS = 58, 256, 8, 16384


def deepseek_loads(kind: str, seed: int) -> np.ndarray:
    """[58][256] int64 routed token copies per layer (see the module doc): every token is
    routed to TOP_K distinct experts drawn without replacement from the layer's weights
    (exponential race), so no expert receives more than 1/TOP_K of a layer's copies."""
    rng = np.random.default_rng(seed)
    out = np.zeros((LAYERS, EXPERTS), dtype=np.int64)
    for layer in range(LAYERS):
        if kind == "mild":
            w = rng.lognormal(0.0, 0.6, EXPERTS)
        else:
            s = rng.uniform(0.9, 1.2)
            w = (1.0 + rng.permutation(EXPERTS)) ** -s * rng.lognormal(0.0, 0.2, EXPERTS)
        # the TOP_K largest w / Exp(1) are a weighted sample without replacement
        with np.errstate(divide="ignore"):
            keys = w.astype(np.float32)[None, :] / rng.standard_exponential((TOKENS, EXPERTS), dtype=np.float32)
        chosen = np.argpartition(-keys, TOP_K, axis=1)[:, :TOP_K]
        out[layer] = np.bincount(chosen.ravel(), minlength=EXPERTS)
    return out


def ten_b_loads() -> np.ndarray:
    from optimizer.cli.common import load_instance
    from optimizer.cli.place import synthetic_counts
    return np.array(synthetic_counts(load_instance(str(REPO / "instances" / "10b_moe.json"))), dtype=np.int64)


def cases(only: str | None):
    out = []
    for kind, seed in (("mild", 11), ("heavy", 12)):
        loads = deepseek_loads(kind, seed)
        for ep, nodes in ((32, 4), (64, 8)):
            out.append((f"dsv3-{kind}-{ep}gpu", loads, ep, ep, nodes))
    out.append(("10b-8gpu", ten_b_loads(), 8, 0, 1))
    return [c for c in out if only is None or only in c[0]]


def run_case(name, loads, ep, redundant, nodes, args, tmp: Path) -> dict:
    path = tmp / f"{name}.npy"
    np.save(path, loads)
    cmd = ["moeopt", "place", "--loads", str(path), "--ep", str(ep), "--redundant", str(redundant),
           "--nodes", str(nodes), "--workers", str(args.workers), "--time-limit", str(args.time_limit),
           "--seed", "0", "--format", "json"]
    if args.spread and nodes > 1:
        cmd.append("--spread-replicas")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}: {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    greedy = [balancedness([float(x) for x in row], greedy_place([float(x) for x in row], ep, redundant))
              for row in loads]
    ours = [lay["balancedness"] for lay in doc["layers"]]
    worse = sum(o < g - 2e-6 for o, g in zip(ours, greedy))  # the JSON rounds to 6 digits
    return {"case": name, "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "solve_s": doc["wall_s"], "bal_mean": doc["balancedness_mean"], "bal_min": doc["balancedness_min"],
            "worst_gap": doc["worst_gap"], "status": doc["status"],
            "greedy_mean": sum(greedy) / len(greedy), "greedy_min": min(greedy),
            "layers_worse_than_greedy": worse, "cross_node_tokens": doc.get("cross_node_tokens")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=50.0, help="moeopt place --time-limit (s)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    ap.add_argument("--spread", action="store_true", help="add --spread-replicas")
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}; --time-limit {args.time_limit} "
          f"--workers {args.workers}{' --spread-replicas' if args.spread else ''}")
    head = (f"{'case':<20}{'wall s':>8}{'cpu s':>8}{'bal mean':>10}{'bal min':>9}{'worst gap':>11}"
            f"{'status':>10}{'greedy mean':>13}{'greedy min':>12}{'ratio':>8}{'worse':>7}")
    print(head)
    with tempfile.TemporaryDirectory() as tmp:
        for name, loads, ep, redundant, nodes in cases(args.only):
            r = run_case(name, loads, ep, redundant, nodes, args, Path(tmp))
            print(f"{r['case']:<20}{r['wall_s']:>8.1f}{r['cpu_s']:>8.1f}{r['bal_mean']:>10.5f}{r['bal_min']:>9.5f}"
                  f"{100 * r['worst_gap']:>10.3f}%{r['status']:>10}{r['greedy_mean']:>13.5f}"
                  f"{r['greedy_min']:>12.5f}{r['bal_mean'] / r['greedy_mean']:>8.4f}"
                  f"{r['layers_worse_than_greedy']:>7}", flush=True)
    print("ratio = mean balancedness / greedy's; worse = layers below the greedy baseline; "
          "gap = (max - lower bound) / max, the bound being max(mean, least heaviest replica, ...)")


if __name__ == "__main__":
    main()
