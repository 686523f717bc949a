"""Short time limits still return a plan, and the worker count defaults to what helps.

- Deterministic: a build abandoned right after its first greedy plan (OutOfTime raised at
  that point, as the deadline's alarm would) returns that plan as "feasible" with a valid
  bound: at most the proven optimum of an unhurried solve, which is at most the plan's
  objective, and the plan meets every requirement by the independent evaluator.
- End to end, generous: ``moeopt solve --time-limit 1`` on the small shipped instances
  exits 0 with a plan (the build takes well under a second there).
- ``auto_workers``: 1 below AUTO_TWO_WORKERS_MIN_CONFIGS configurations, 2 from it on (on
  2 CPUs or more); the instance default (``search.workers`` = 0) resolves through it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from optimizer.cpsat import model as model_mod
from optimizer.cpsat import search as search_mod
from optimizer.cpsat.budget import OutOfTime
from optimizer.cpsat.search import AUTO_TWO_WORKERS_MIN_CONFIGS, SolverSettings, auto_workers, make_solver
from optimizer.cpsat.solve import solve
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import evaluate
from tests.cpsat.test_interrupt import MOEOPT

REPO = Path(__file__).resolve().parents[2]
SMALL = ["10b_moe", "mixtral_8x7b_bf16_h100", "qwen3_30b_a3b_h200", "deepseek_v2_lite_bf16_a100",
         "deepseek_v3_fp8_h200"]


@pytest.mark.parametrize("name", ["10b_moe", "mixtral_8x7b_bf16_h100", "deepseek_v3_fp8_h100"])
def test_a_build_cut_short_returns_its_greedy_plan(monkeypatch, name):
    inst = load_model(REPO / "instances" / f"{name}.json", Instance, "instance")
    best = solve(inst, workers=1)  # unhurried: proven optimal
    assert best.status == "optimal"

    real = model_mod.Progress.record

    def record_then_stop(self, kept, greedy):
        real(self, kept, greedy)
        if self.greedy is not None:
            raise OutOfTime("time limit")  # what the deadline's alarm raises mid-build

    monkeypatch.setattr(model_mod.Progress, "record", record_then_stop)
    cut = solve(inst, workers=1)
    assert cut.status == "feasible" and cut.extra.get("greedy")
    check = evaluate(inst, cut.plan)  # the independent evaluator, from the plan alone
    assert check.feasible
    assert cut.primary.objective == check.objective_ns
    # the bound is valid: no plan beats it, in particular not the proven optimum
    assert cut.primary.bound <= best.primary.objective <= cut.primary.objective
    assert cut.primary.gap is not None and 0 <= cut.primary.gap < 1


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.slow
def test_one_second_limit_returns_a_plan(name, tmp_path):
    out = tmp_path / "plan.json"
    done = subprocess.run(MOEOPT + ["solve", str(REPO / "instances" / f"{name}.json"), "--time-limit", "1",
                                    "--output", str(out), "--format", "json"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    solver = json.loads(out.read_text())["solver"]
    assert solver["status"] in ("optimal", "feasible")
    assert solver["bound"] <= solver["objective"]


def test_auto_workers_threshold(monkeypatch):
    monkeypatch.setattr(search_mod.os, "cpu_count", lambda: 2)
    assert auto_workers(None) == 1
    assert auto_workers(1) == auto_workers(AUTO_TWO_WORKERS_MIN_CONFIGS - 1) == 1
    assert auto_workers(AUTO_TWO_WORKERS_MIN_CONFIGS) == auto_workers(28) == 2
    monkeypatch.setattr(search_mod.os, "cpu_count", lambda: 1)
    assert auto_workers(28) == 1  # one CPU: a second worker only competes for it


def test_instance_default_is_automatic(monkeypatch):
    monkeypatch.setattr(search_mod.os, "cpu_count", lambda: 2)
    inst = load_model(REPO / "instances" / "10b_moe.json", Instance, "instance")
    auto = inst.model_copy(update={"search": inst.search.model_copy(update={"workers": 0})})
    settings = SolverSettings.of(auto)
    assert settings.workers == 0 and Instance.model_fields["search"].default.workers == 0
    assert make_solver(settings, 1.0, 2).parameters.num_workers == 1
    solver = make_solver(settings, 1.0, 11)
    assert solver.parameters.num_workers == 2 and solver.parameters.interleave_search
    assert make_solver(SolverSettings.of(auto, workers=3), 1.0, 1).parameters.num_workers == 3  # explicit wins


# --- a machine too busy to finish the build by the deadline (a stalled build, not a busy one) ---

STALL_S = 2.5  # > the 1 s limit plus its 1.1 s grace: the wall-clock deadline passes mid-build


def _stall_the_build(monkeypatch):
    """The build's cost tables first wait STALL_S of wall time without using CPU, as on a
    machine that gives this process no CPU for a while."""
    import time
    real = search_mod.candidate_costs

    def stalled(*args, **kwargs):
        time.sleep(STALL_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(search_mod, "candidate_costs", stalled)


def test_a_stalled_build_still_returns_the_greedy_plan(monkeypatch):
    inst = load_model(REPO / "instances" / "deepseek_v3_fp8_h100.json", Instance, "instance")
    best = solve(inst, workers=1)
    _stall_the_build(monkeypatch)
    cut = solve(inst, time_limit_s=1, workers=1)
    # the deadline passed before the first greedy plan; the build went on (its CPU time stayed
    # far below the limit plus grace) and then stopped at its next look at the clock: the
    # greedy plan, or phase 1's plan from its shortest search, is the plan (no phase 2)
    assert cut.status == "feasible" and cut.secondary is None
    check = evaluate(inst, cut.plan)
    assert check.feasible and cut.primary.objective == check.objective_ns
    assert cut.primary.bound <= best.primary.objective <= cut.primary.objective


def test_a_build_spending_its_cpu_budget_before_a_plan_is_abandoned(monkeypatch):
    """The CPU-time cap is real: with the process's CPU clock replaced by the wall clock, the
    stalled build has spent the limit plus grace before its first plan and is abandoned."""
    import time

    from optimizer.cpsat import budget as budget_mod
    from optimizer.errors import NoSolutionError
    monkeypatch.setattr(budget_mod, "cpu_clock", time.monotonic)
    _stall_the_build(monkeypatch)
    inst = load_model(REPO / "instances" / "deepseek_v3_fp8_h100.json", Instance, "instance")
    with pytest.raises(NoSolutionError, match="building the model took all of it"):
        solve(inst, time_limit_s=1, workers=1)


def test_the_command_line_writes_the_greedy_plan_of_a_stalled_build(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from optimizer.cli.main import main
    _stall_the_build(monkeypatch)
    out = tmp_path / "plan.json"
    done = CliRunner().invoke(main, ["solve", str(REPO / "instances" / "deepseek_v3_fp8_h100.json"),
                                     "--time-limit", "1", "--workers", "1", "--output", str(out)])
    assert done.exit_code == 0, done.output
    solver = json.loads(out.read_text())["solver"]
    assert solver["status"] == "feasible" and "makespan_status" not in solver  # no time for phase 2
    assert 0 <= solver["gap"] < 1 and solver["bound"] <= solver["objective"]
