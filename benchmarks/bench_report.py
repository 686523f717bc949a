"""Timing of ``moeopt report`` on DeepSeek-V3-size plans (the whole process, median of 3).

Writes, in a temporary folder, a DeepSeek-V3-size instance (61 layers, all MoE as the
schema requires, 256 experts, top-8, 64 GPUs in 8 nodes, power-law loads) and plans built
from it with ``evaluate`` + ``plan_to_json``:

- ``ep64``: TP 1 x DP 64, EP 64, one stage, reported with ``--instance`` (every picture);
- ``ep32``: TP 1 x DP 32, EP 32, two stages, placement of layers 0-2 removed (58 MoE layers),
  reported without an instance.

Then times ``moeopt report PLAN [--instance I] --output TMP`` as a whole process, ``--runs``
times each (default 3), and prints the median, min and max wall seconds and the CPU seconds
of the children. Exits 1 when a median exceeds the 5 s budget of issue 8.

    python -m benchmarks.bench_report [--runs 3]

``deepseek_v3_instance`` and ``deepseek_v3_plan`` are also the test helpers of
``tests/output/test_report.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.greedy_placement import greedy_ranks
from optimizer.inputs.schema import Instance, ModelSpec
from optimizer.plan.evaluate import evaluate
from optimizer.plan.files import PlanFile, plan_from_file, plan_to_json

BUDGET_S = 5.0
DENSE_LAYERS = 3  # DeepSeek-V3's first_k_dense_replace


def deepseek_v3_instance() -> dict:
    """A DeepSeek-V3-size instance (MLA approximated as MHA with 128 heads of 128). Where the
    schema knows dense layers (``moe_layers``), the first 3 layers are dense as in V3."""
    model = {"name": "DeepSeek-V3 size", "num_layers": 61, "hidden_size": 7168,
             "num_attention_heads": 128, "num_kv_heads": 128, "head_dim": 128,
             "num_experts": 256, "top_k": 8, "expert_ffn_size": 2048, "ffn_matrices": 3,
             "vocab_size": 129280, "weight_dtype": "fp8", "kv_dtype": "fp8"}
    if "moe_layers" in ModelSpec.model_fields:
        model |= {"moe_layers": list(range(DENSE_LAYERS, 61)), "dense_ffn_size": 18432}
    return {
        "name": "dsv3_size",
        "model": model,
        "hardware": {"num_gpus": 64, "gpus_per_node": 8,
                     "gpu": {"name": "H800", "peak_tflops": 1979, "memory_gb": 80,
                             "hbm_bandwidth_gb_s": 3350},
                     "intra_node_bandwidth_gb_s": 400, "inter_node_bandwidth_gb_s": 50},
        "workload": {"batch_sequences": 256, "prompt_tokens": 4096},
        "requirements": {"min_throughput_tokens_per_ms": 50, "max_ttft_s": 30},
        "expert_load": {"kind": "power_law", "exponent": 0.6, "seed": 7},
    }


def deepseek_v3_plan(ep: int, drop_dense: bool = False) -> dict:
    """Plan JSON on 64 GPUs with EP ``ep`` (64: one stage; 32: two stages), experts placed
    heaviest-first per MoE layer, every figure from ``evaluate``. ``drop_dense`` removes the
    placement of layers 0-2 (already absent where the schema has dense layers)."""
    inst = Instance.model_validate(deepseek_v3_instance())
    moe_ids = getattr(inst.model, "moe_layer_ids", range(inst.model.num_layers))
    loads = dict(zip(moe_ids, expert_loads(inst)))
    sketch = {"instance": inst.name, "degrees": {"tp": 1, "pp": 64 // ep, "dp": ep, "ep": ep},
              "micro_batches": 4,
              "expert_placement": {str(layer): [sorted(r) for r in greedy_ranks(row, ep)]
                                   for layer, row in loads.items()}}
    plan, checks = plan_from_file(inst, PlanFile.model_validate(sketch))
    assert plan is not None, [c.name for c in checks if not c.ok]
    solver = {"status": "feasible", "objective": 1234.5, "bound": 1000.25, "gap": 0.19,
              "wall_s": 12.5}
    doc = plan_to_json(plan, evaluate(inst, plan), "feasible", solver)
    for layer in range(DENSE_LAYERS if drop_dense else 0):
        doc["expert_placement"].pop(str(layer), None)
    return doc


def moeopt_command() -> list[str]:
    """The installed ``moeopt`` entry point, else the CLI module under this interpreter."""
    exe = shutil.which("moeopt") or str(Path(sys.executable).with_name("moeopt"))
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "optimizer.cli"]


def time_report(args: list[str], cwd: Path, runs: int) -> tuple[list[float], float]:
    """(wall seconds of each run, mean CPU seconds per run) of ``moeopt report ARGS``."""
    walls = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(moeopt_command() + ["report", *args], cwd=cwd, capture_output=True,
                              text=True)
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"moeopt report exited {done.returncode}: {done.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / runs
    return walls, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    slow = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "dsv3.json").write_text(json.dumps(deepseek_v3_instance()))
        (root / "ep64.json").write_text(json.dumps(deepseek_v3_plan(64)))
        (root / "ep32.json").write_text(json.dumps(deepseek_v3_plan(32, drop_dense=True)))
        cases = [("EP 64, with --instance",
                  ["ep64.json", "--instance", "dsv3.json", "--output", "ep64.html"], "ep64.html"),
                 ("EP 32, 58 MoE layers, no instance", ["ep32.json", "--output", "ep32.html"],
                  "ep32.html")]
        print(f"moeopt report, DeepSeek-V3-size plans (256 experts, 64 GPUs in 8 nodes), "
              f"whole process, {opts.runs} runs each; budget {BUDGET_S:g} s")
        for label, args, out in cases:
            walls, cpu = time_report(args, root, opts.runs)
            median = statistics.median(walls)
            slow |= median > BUDGET_S
            size_kb = (root / out).stat().st_size / 1024
            print(f"  {label:<40} median {median:5.2f} s  (min {min(walls):.2f}, max {max(walls):.2f}; "
                  f"CPU {cpu:.2f} s/run; {size_kb:.0f} KB) {'OVER BUDGET' if median > BUDGET_S else 'ok'}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
