"""Same answer every time: the same instance and options give byte-identical plan JSON
(the solver's "wall_s" aside), run after run, in separate processes.

Each instance is solved three times, each in its own process with its own
``PYTHONHASHSEED`` (so set and dict orders of strings differ between runs), two at a time.
Determinism rests on one CP-SAT worker (or interleaved, deterministic search for several),
a fixed seed, placement proofs bounded by deterministic time, and the model being built in
the same order every time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_script = shutil.which("moeopt", path=str(Path(sys.executable).parent))
MOEOPT = [_script] if _script else [sys.executable, "-c", "from optimizer.cli import main; main()"]
RUNS = 3

CASES = [
    pytest.param("10b_moe.json", [], id="10b_moe"),
    pytest.param("10b_moe.json", ["--gpus", "8"], id="10b_moe-gpus-8"),
    pytest.param("mixtral_8x7b_bf16_h100.json", [], id="mixtral-decode"),
    pytest.param("10b_moe.json", ["--gpus", "16", "--workers", "2"], id="10b_moe-gpus-16-workers-2"),
]


def without_wall_s(text: str) -> str:
    out, n = re.subn(r'^\s*"wall_s": [^\n]*\n', "", text, flags=re.M)
    assert n == 1, f"expected exactly one wall_s line, found {n}"
    return out


def solve_once(instance: Path, extra: list[str], folder: Path, run: int) -> bytes:
    out = folder / f"plan-{run}.json"
    env = {**os.environ, "PYTHONHASHSEED": str(run * 7919 + 1)}
    res = subprocess.run(MOEOPT + ["solve", str(instance), *extra, "--output", str(out)],
                         capture_output=True, text=True, cwd=folder, timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    return out.read_bytes()


@pytest.mark.parametrize("name, extra", CASES)
@pytest.mark.slow
def test_plan_json_is_byte_identical_across_processes(name, extra, tmp_path):
    instance = REPO / "instances" / name
    if not instance.is_file():
        pytest.skip(f"{name} is not in instances/")
    with ThreadPoolExecutor(max_workers=2) as pool:
        plans = list(pool.map(lambda run: solve_once(instance, extra, tmp_path, run), range(RUNS)))
    texts = [without_wall_s(p.decode("utf-8")) for p in plans]
    assert texts[0] == texts[1] == texts[2], "plans differ between runs"
    assert '"status": "optimal"' in texts[0]
