"""The Python API (docs/python-api.md): ``import optimizer`` stays cheap, the documented
example runs, and the functions give what the commands print (the commands call them)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "python-api.md"


def test_import_optimizer_loads_no_heavy_module():
    """Only the package itself: pandas, pydantic and OR-Tools wait for the first call."""
    code = ("import sys, optimizer\n"
            "heavy = [m for m in ('pandas', 'pydantic', 'ortools', 'optimizer.api') if m in sys.modules]\n"
            "print(heavy)\n"
            "from optimizer import load_instance, solve, check, pareto, simulate\n"
            "print(all(callable(f) for f in (load_instance, solve, check, pareto, simulate)))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "True"]


def test_simulate_stays_the_function_after_the_subpackage_loads():
    import optimizer
    from optimizer import simulate
    from optimizer.simulate.run import Settings  # noqa: F401  (binds the subpackage)
    assert callable(simulate) and optimizer.simulate is simulate


@pytest.mark.slow
def test_documented_example_runs():
    """The ```python block of docs/python-api.md, run as a script from the repository root."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1
    res = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    first, second = res.stdout.splitlines()[:2]
    assert first.startswith(("optimal ", "feasible ")) and "Degrees(" in first
    assert re.fullmatch(r"TTFT \d+\.\d{3} s, \d+\.\d{2} tokens/ms per GPU", second)
    assert "tokens_per_s_per_user" in res.stdout


def test_solve_and_check_agree_with_the_commands(tmp_path):
    """api.solve gives the plan ``moeopt solve`` writes; api.check on that file gives the
    document ``moeopt check --format json`` prints."""
    from optimizer import check, solve
    from optimizer.cli import main as cli_main
    from optimizer.cli.solve import solver_dict
    from optimizer.plan.files import plan_to_json
    inst = REPO / "instances" / "10b_moe.json"
    plan_file = tmp_path / "plan.json"
    res = CliRunner().invoke(cli_main, ["solve", str(inst), "--gpus", "8", "--output", str(plan_file)])
    assert res.exit_code == 0, res.output
    result = solve(inst, gpus=8)
    written = json.loads(plan_file.read_text())
    mine = plan_to_json(result.plan, result.evaluation, result.status, solver_dict(result))
    for key in ("degrees", "stages", "expert_placement", "metrics"):
        assert mine[key] == written[key], key
    report = check(inst, plan_file)
    res = CliRunner().invoke(cli_main, ["check", str(inst), str(plan_file), "--format", "json"])
    assert res.exit_code == 0 and report.feasible
    assert json.loads(res.stdout) == json.loads(json.dumps(report.document))
    own = check(inst, result.plan)  # a Plan object: evaluated directly
    assert own.feasible and own.evaluation.metrics() == result.evaluation.metrics()


@pytest.mark.slow
def test_pareto_is_the_commands_table():
    """api.pareto's DataFrame, written as CSV, is what ``moeopt pareto --all --format csv`` prints."""
    from optimizer import pareto
    from optimizer.cli import main as cli_main
    inst = REPO / "instances" / "mixtral_8x7b_bf16_h100.json"
    df = pareto(inst, time_limit_s=30)
    assert isinstance(df, pd.DataFrame) and df["pareto"].any()
    res = CliRunner().invoke(cli_main, ["pareto", str(inst), "--all", "--format", "csv", "--time-limit", "30"])
    assert res.exit_code == 0, res.output
    assert res.stdout == df.to_csv(index=False)
    assert len(pd.read_csv(StringIO(res.stdout))) == len(df)
