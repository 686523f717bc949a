"""Record what every command prints and writes on the shipped instances, to prove a refactor
changes no behaviour: run it before and after, then ``diff -r`` the two folders.

Usage: ``python tests/tools/snapshot_outputs.py OUT_DIR`` from the repository root, with the
``moeopt`` command of the tree under test on PATH. Wall-clock figures are masked; everything
else (stdout, stderr, exit code, every file written) must match byte for byte.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Timing figures are the only values allowed to differ between two runs.
MASKS = [
    (re.compile(r'("(?:wall_s|elapsed_s|build_s|search_s)":\s*)[-0-9.e]+'), r"\1<t>"),
    (re.compile(r"(wall(?:_s)?[ =:]+)[0-9.]+"), r"\1<t>"),
    (re.compile(r"\b[0-9]+\.[0-9]+ s wall\b"), "<t> s wall"),
    (re.compile(r"(in )[0-9.]+( s\b)"), r"\1<t>\2"),
    (re.compile(r"(/tmp/)[^/\s\"']+"), r"\1<tmp>"),
    (re.compile(r'(<td>wall_s</td><td class="num">)[0-9.]+'), r"\1<t>"),
]
INSTANCES = ["10b_moe", "deepseek_v3_fp8_h200", "mixtral_8x7b_bf16_h100", "qwen3_30b_a3b_h200",
             "deepseek_v2_lite_bf16_a100"]
W = "--workers 1 --seed 1"


def commands(work: Path) -> list[tuple[str, str]]:
    """(label, shell command) pairs; the commands write only below ``work``."""
    cmds = [("solve_10b_moe_per_gpu", f"moeopt solve instances/10b_moe_per_gpu.json {W}"),
            ("check_seed", "moeopt check instances/10b_moe.json instances/seed_plan.json"),
            ("check_seed_json", "moeopt check instances/10b_moe.json instances/seed_plan.json --format json"),
            ("pareto_10b", f"moeopt pareto instances/10b_moe.json {W} --format csv"),
            ("pareto_10b_all", f"moeopt pareto instances/10b_moe.json {W} --all"),
            ("sweep_10b", f"moeopt sweep instances/10b_moe.json --gpus 8,16,64 {W} --format csv"),
            ("inspect_ds", "moeopt inspect instances/deepseek_v3_fp8_h200.json --format json"),
            ("inspect_hf", "moeopt inspect tests/fixtures/hf/deepseek_v3.json"),
            ("import_hf", "moeopt import-hf tests/fixtures/hf/qwen3_30b_a3b.json"),
            ("init", "moeopt init --model tests/fixtures/hf/mixtral_8x7b.json --gpu h100-sxm --gpus 8 "
                     f"--output {work}/init.json"),
            ("schema_instance", "moeopt schema instance"),
            ("schema_plan", "moeopt schema plan"),
            ("bad_input", "moeopt solve instances/README.md"),
            ("place_counts", "moeopt place instances/10b_moe.json --ep 8 --format json --time-limit 20 --seed 1 "
                             f"--output {work}/place.json")]
    for name in INSTANCES:
        plan = f"{work}/{name}.plan.json"
        cmds += [(f"solve_{name}", f"moeopt solve instances/{name}.json {W} --output {plan}"),
                 (f"solve_{name}_table", f"moeopt solve instances/{name}.json {W} --output -"),
                 (f"check_{name}", f"moeopt check instances/{name}.json {plan}"),
                 (f"report_{name}", f"moeopt report {plan} --instance instances/{name}.json --output {work}/{name}.html")]
        for fmt in ("sglang", "vllm", "trtllm", "megatron", "csv"):
            cmds.append((f"export_{name}_{fmt}", f"moeopt export {plan} --to {fmt} --output {work}/ex-{name}-{fmt}"))
    return cmds


def mask(text: str) -> str:
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return text


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    if out.exists():
        shutil.rmtree(out)
    work = out / "work"
    work.mkdir(parents=True)
    for label, cmd in commands(work):
        proc = subprocess.run(cmd, shell=True, cwd=REPO, capture_output=True, text=True)
        (out / f"{label}.txt").write_text(
            f"$ {cmd.replace(str(work), '<work>')}\nexit {proc.returncode}\n--- stdout\n"
            f"{mask(proc.stdout.replace(str(work), '<work>'))}\n--- stderr\n"
            f"{mask(proc.stderr.replace(str(work), '<work>'))}")
        print(label, proc.returncode, flush=True)
    for path in sorted(work.rglob("*")):
        if path.is_file():
            path.write_text(mask(path.read_text().replace(str(work), "<work>")))


if __name__ == "__main__":
    main()
