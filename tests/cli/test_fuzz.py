"""Property-based fuzzing of every input moeopt reads (hypothesis).

Mutated instance files (from ``instances/*.json``), plan files (from a plan ``moeopt solve``
writes, and the hand-written seed plan), load files for ``moeopt place --loads`` (SGLang
JSON, CSV, ``.npy``), HuggingFace configs and whole command lines: wrong types, negatives
and zeros, NaN and infinities, enormous numbers, valid values at the schema's edges,
missing and extra sections, unknown keys, empty, binary, truncated and non-UTF-8 files, a
directory where a file belongs; and deliberately hostile inputs (``tests/oracles/hostile.py``).
The generators live in ``tests/oracles/fuzzkit.py`` (shared
with ``benchmarks/bench_fuzz.py``, the larger campaign); ``tests/cli/test_bad_input.py`` keeps
the table of named bad inputs.

Every run must obey the contract (``docs/interface.md``): exit 0, 2, 3 or 4, never
1 and never a traceback; exit 2 prints exactly one line on stderr naming the field, file or
option and the rule.

Bounded for CI (about a minute on 2 cores) and derandomized (the same inputs every run).
``MOEOPT_FUZZ_SCALE=10`` runs ten times as many examples; ``MOEOPT_FUZZ_RANDOM=1`` draws new
inputs each run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oracles import fuzzkit

SCALE = float(os.environ.get("MOEOPT_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("MOEOPT_FUZZ_RANDOM", "") not in ("", "0")
RNG = st.randoms(use_true_random=False)


def fuzz(examples: int):
    return settings(max_examples=max(1, round(examples * SCALE)), deadline=None, derandomize=not RANDOM,
                    database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    fuzzkit.solved_plan()  # the valid plan the plan mutations start from, solved once
    return tmp_path_factory.mktemp("fuzz")


def obeys_the_contract(generator, rng: random.Random, root: Path) -> None:
    folder = Path(tempfile.mkdtemp(dir=root))
    try:
        case = generator(rng, folder)
        out = fuzzkit.invoke(case.args, folder)
        problems = fuzzkit.violations(case, out)
        assert not problems, f"{problems}\n{fuzzkit.describe(case, out)}"
    finally:
        fuzzkit.restore(folder)
        shutil.rmtree(folder, ignore_errors=True)


@fuzz(60)
@given(rng=RNG)
@pytest.mark.slow
def test_solve_mutated_instances(rng, root):
    obeys_the_contract(fuzzkit.GENERATORS["solve"], rng, root)


@fuzz(80)
@given(rng=RNG)
def test_inspect_mutated_instances(rng, root):
    obeys_the_contract(fuzzkit.GENERATORS["inspect"], rng, root)


@fuzz(50)
@given(rng=RNG)
def test_check_mutated_instances(rng, root):
    obeys_the_contract(fuzzkit.GENERATORS["check-instance"], rng, root)


@fuzz(80)
@given(rng=RNG)
def test_check_mutated_plans(rng, root):
    obeys_the_contract(fuzzkit.GENERATORS["check-plan"], rng, root)


@fuzz(60)
@given(rng=RNG)
def test_export_mutated_plans(rng, root):
    obeys_the_contract(fuzzkit.GENERATORS["export"], rng, root)


@fuzz(30)
@given(rng=RNG)
@pytest.mark.slow
def test_report_mutated_plans(rng, root):
    obeys_the_contract(fuzzkit.GENERATORS["report"], rng, root)


@fuzz(80)
@given(rng=RNG)
def test_place_mutated_load_files(rng, root):
    obeys_the_contract(fuzzkit.GENERATORS["place"], rng, root)


@fuzz(60)
@given(rng=RNG)
def test_import_inspect_init_mutated_hf_configs(rng, root):
    obeys_the_contract(fuzzkit.GENERATORS["hf"], rng, root)


@fuzz(100)
@given(rng=RNG)
@pytest.mark.slow
def test_command_lines(rng, root):
    obeys_the_contract(fuzzkit.GENERATORS["cli"], rng, root)


@pytest.mark.slow
@fuzz(80)
@given(rng=RNG)
def test_hostile_inputs(rng, root):
    """Deep nesting, huge integers, lone surrogates, duplicate keys, hostile names, sizes
    over the caps and hostile output paths (``tests/oracles/hostile.py``): nothing printed
    raw, nothing created outside the folder."""
    obeys_the_contract(fuzzkit.GENERATORS["hostile"], rng, root)


# ------------------------------------------------------------------ unreadable files


def _unreadable(path: Path) -> None:
    path.chmod(0)
    if os.access(path, os.R_OK):
        path.chmod(0o644)
        pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reading, "
                    "so an unreadable file cannot be made here")


@pytest.mark.parametrize("what", ["instance", "plan", "loads", "hf"])
def test_unreadable_file_is_one_line_exit_2(what, tmp_path):
    path = tmp_path / ("loads.json" if what == "loads" else f"{what}.json")
    source = {"instance": fuzzkit.FAST_INSTANCE, "plan": fuzzkit.SEED_PLAN,
              "hf": next(iter(sorted(fuzzkit.HF_DIR.glob("*.json"))))}.get(what)
    if source is None:
        path.write_text(json.dumps({"logical_count": [[1, 2, 3, 4]]}))
    else:
        shutil.copy(source, path)
    _unreadable(path)
    try:
        args = {"instance": ["solve", str(path), "--output", str(tmp_path / "out.json")],
                "plan": ["check", str(fuzzkit.FAST_INSTANCE), str(path)],
                "loads": ["place", "--loads", str(path), "--ep", "2"],
                "hf": ["import-hf", str(path)]}[what]
        case = fuzzkit.Case(args[0], args, [what], [str(path)])
        out = fuzzkit.invoke(args, tmp_path)
        assert out.code == 2, fuzzkit.describe(case, out)
        assert not fuzzkit.violations(case, out), fuzzkit.describe(case, out)
        assert "permission denied" in out.stderr
    finally:
        path.chmod(0o644)


# ------------------------------------------------------------------ real processes


_script = shutil.which("moeopt", path=str(Path(sys.executable).parent))
MOEOPT = [_script] if _script else [sys.executable, "-c", "from optimizer.cli import main; main()"]


@pytest.mark.slow
def test_a_sample_in_real_processes(tmp_path):
    """A few generated inputs through the installed console script: what a user sees,
    interpreter warnings and all, obeys the same rule."""
    rng = random.Random(20261124)
    for i, name in enumerate(["solve", "check-plan", "place", "cli", "hf", "export"]):
        folder = tmp_path / f"{i}-{name}"
        folder.mkdir()
        case = fuzzkit.GENERATORS[name](rng, folder)
        res = subprocess.run(MOEOPT + case.args[:], capture_output=True, text=True, cwd=folder, timeout=300)
        out = fuzzkit.Outcome(res.returncode, res.stdout, res.stderr, 0.0)
        assert not fuzzkit.violations(case, out), fuzzkit.describe(case, out)
        fuzzkit.restore(folder)
