"""``--time-limit`` bounds the whole command (start-up aside) for solve, pareto and sweep.

- Deterministic: with the budgets' clock replaced by a fake one that advances a fixed step
  per CP-SAT solver made, every solve of ``pareto_table`` is given exactly what is left of
  the one deadline, and once it has passed no further solve starts (the table counts the
  configurations left unsolved); ``point_seconds`` shares a sweep's limit among its points.
- End to end, with a generous bound: pareto and sweep on an instance whose search runs for
  minutes without a limit end within the limit plus the build grace plus start-up.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from optimizer.cpsat import budget as budget_mod
from optimizer.cpsat import search as search_mod
from optimizer.cpsat.search import SolverSettings
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.search import pareto as pareto_mod
from optimizer.search.sweep import point_seconds
from tests.cpsat.test_interrupt import MOEOPT, STARTUP_S, slow_instance

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "mixtral_8x7b_bf16_h100.json"  # 11 solves (decode: TTFT-makespan trade-offs)


def test_pareto_solves_share_one_deadline(monkeypatch):
    inst = load_model(INSTANCE, Instance, "instance")
    limit, step = 20.0, 6.0
    now = [500.0]
    monkeypatch.setattr(budget_mod, "clock", lambda: now[0])
    given = []
    real = search_mod.make_solver

    def recording(settings, time_limit_s):
        given.append(time_limit_s)
        now[0] += step  # as if every search used 6 s
        return real(settings, time_limit_s)

    monkeypatch.setattr(pareto_mod, "make_solver", recording)
    table = pareto_mod.pareto_table(inst, None, SolverSettings(limit, 1, 0))
    # 20 s of budget, 6 s per solve: solvers get 20, 14, 8, 2 s; then the deadline has
    # passed (20 - 4 * 6 < 0) and no further solve starts.
    assert given == [20.0, 14.0, 8.0, 2.0]
    assert table.attrs["unsolved"] >= 1
    assert len(table) >= 1  # the points found before the deadline are kept


def test_pareto_without_pressure_solves_everything(monkeypatch):
    """The same table with a clock that never moves: nothing is left unsolved, and every
    solver is given the whole limit (nothing of it was used)."""
    inst = load_model(INSTANCE, Instance, "instance")
    monkeypatch.setattr(budget_mod, "clock", lambda: 500.0)
    given = []
    real = search_mod.make_solver

    def recording(settings, time_limit_s):
        given.append(time_limit_s)
        return real(settings, time_limit_s)

    monkeypatch.setattr(pareto_mod, "make_solver", recording)
    table = pareto_mod.pareto_table(inst, None, SolverSettings(20.0, 1, 0))
    assert table.attrs["unsolved"] == 0
    assert len(given) > 4 and set(given) == {20.0}


@pytest.mark.parametrize("limit, todo, parallel, expected", [
    (60.0, 3, 1, 20.0),   # three rounds of one point
    (60.0, 3, 2, 30.0),   # rounds: {a, b}, {c}
    (60.0, 4, 4, 60.0),   # one round
    (60.0, 0, 1, 60.0),   # nothing to do: never divides by zero
])
def test_point_seconds_share_the_sweep_limit(limit, todo, parallel, expected):
    assert point_seconds(limit, todo, parallel) == expected


@pytest.mark.parametrize("command", ["solve", "pareto", "sweep"])
def test_help_says_the_limit_is_for_the_whole_command(command):
    res = subprocess.run(MOEOPT + [command, "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(res.stdout.split())
    assert res.returncode == 0
    assert "whole command" in text or "whole sweep" in text


def _timed(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    res = subprocess.run(MOEOPT + args, capture_output=True, text=True, cwd=cwd, timeout=600)
    return res, time.monotonic() - start


@pytest.mark.slow
def test_pareto_and_sweep_end_near_their_limit(tmp_path):
    """The slow instance (64 experts, 24 layers, 32 GPUs): one of its searches alone runs
    for many seconds. With --time-limit 4 each command ends within 4 s plus the grace of
    a build (1 + 0.1 * 4 s, per budget: two in a sweep point) plus a generous start-up."""
    inst = slow_instance(tmp_path)
    limit = 4.0
    bound = limit + 2 * (1 + 0.1 * limit) + STARTUP_S
    res, wall = _timed(["pareto", str(inst), "--time-limit", str(limit), "--format", "csv"], tmp_path)
    assert res.returncode in (0, 4), res.stderr
    assert wall < bound, f"pareto: {wall:.1f} s for --time-limit {limit}"
    res, wall = _timed(["sweep", str(inst), "--gpus", "16,32", "--time-limit", str(limit), "--format", "csv",
                        "--output", str(tmp_path / "out")], tmp_path)
    assert res.returncode == 0, res.stderr
    assert wall < bound, f"sweep: {wall:.1f} s for --time-limit {limit}"
    points = [json.loads((tmp_path / "out" / "sweep-points" / f"{g}.json").read_text()) for g in (16, 32)]
    assert [p["num_gpus"] for p in points] == [16, 32]
