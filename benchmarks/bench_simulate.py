"""Benchmark of ``moeopt simulate``: 10,000 requests (target: at most 20 s each).

Cases (written to a temporary folder from the shipped instances' model and hardware):
- qwen3-chat: Qwen3-30B-A3B on 2 H200 (attention DP 2, EP 2), Poisson at 16 requests/s,
  lognormal prompts (mean 600, sigma 1) and outputs (mean 250, sigma 0.8);
- deepseek-v3: DeepSeek-V3 FP8 on 8 H200 (attention DP 8, EP 8), Poisson at 20 requests/s,
  lognormal prompts (mean 2,000, sigma 0.8) and outputs (mean 300, sigma 0.8);
- qwen3-chat-disagg: the qwen3-chat workload on a disaggregated plan of the same 2 H200, one
  prefill replica and one decode replica of 1 GPU each (prefill pool, KV transfer, decode pool).
Each case runs the whole process ``moeopt simulate INSTANCE PLAN --requests 10000
--format json`` and prints wall and CPU time, engine steps, and the headline figures.

    python -m benchmarks.bench_simulate [--requests 10000] [--only qwen3-chat]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _lognormal(mean: float, sigma: float) -> dict:
    return {"kind": "lognormal", "mean_tokens": mean, "sigma": sigma, "max_tokens": 16384}


CASES = {
    "qwen3-chat": ("qwen3_30b_a3b_h200.json", 2, 16.0, _lognormal(600, 1.0), _lognormal(250, 0.8)),
    "deepseek-v3": ("deepseek_v3_fp8_h200.json", 8, 20.0, _lognormal(2000, 0.8), _lognormal(300, 0.8)),
    "qwen3-chat-disagg": ("qwen3_30b_a3b_h200.json", 2, 16.0, _lognormal(600, 1.0), _lognormal(250, 0.8)),
}
DISAGG = {"qwen3-chat-disagg": (1, 1)}  # GPUs of the prefill and the decode replica


def _plan(name: str, gpus: int) -> dict:
    if name not in DISAGG:
        return {"degrees": {"tp": 1, "pp": 1, "dp": gpus, "ep": gpus, "etp": 1, "edp": 1}}
    pools = [{"role": role, "replicas": 1, "num_gpus": g,
              "degrees": {"tp": 1, "pp": 1, "dp": g, "ep": g, "etp": 1, "edp": 1}}
             for role, g in zip(("prefill", "decode"), DISAGG[name])]
    return {"mode": "disagg", "num_gpus": sum(DISAGG[name]), "pools": pools}


def write_case(folder: Path, name: str) -> tuple[Path, Path]:
    source, gpus, rate, prompt, output = CASES[name]
    doc = json.loads((REPO / "instances" / source).read_text())
    doc.update(name=f"bench_{name.replace('-', '_')}",
               workload={"kind": "service", "arrival_rate_rps": rate, "prompt_tokens": prompt,
                         "output_tokens": output},
               requirements={"max_ttft_s": 2.0, "max_tpot_ms": 60.0})
    doc["hardware"]["num_gpus"] = gpus
    plan = _plan(name, gpus)
    inst_path, plan_path = folder / f"{name}.json", folder / f"{name}_plan.json"
    inst_path.write_text(json.dumps(doc))
    plan_path.write_text(json.dumps(plan))
    return inst_path, plan_path


def run_case(folder: Path, name: str, requests: int) -> None:
    inst, plan = write_case(folder, name)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "optimizer.cli", "simulate", str(inst), str(plan),
                          "--requests", str(requests), "--format", "json",
                          "--output", str(folder / f"{name}_sim.json")],
                         capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode != 0:
        print(f"{name}: exit {res.returncode}: {res.stderr.strip()}")
        return
    s = json.loads(res.stdout)
    print(f"{name:12s} {requests} requests: wall {wall:.1f} s, cpu {cpu:.1f} s, "
          f"{s['engine_steps']} steps; ttft p90 {s['ttft_p90_s']:.3f} s, tpot p90 "
          f"{s['tpot_p90_ms']:.2f} ms, goodput {s['goodput_rps']:.2f} rps, "
          f"peak KV {s['peak_kv_fraction']:.3f}, preemptions {s['preemptions']}"
          f"{'' if wall <= 20 else '  (over the 20 s target)'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--only", choices=sorted(CASES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_simulate_") as tmp:
        for name in ([args.only] if args.only else CASES):
            run_case(Path(tmp), name, args.requests)


if __name__ == "__main__":
    main()
