"""Ctrl-C and time limits: a solve stops when asked and when its time is up.

- SIGINT during the CP-SAT search prints the best plan found so far (status "feasible",
  with its gap, ``"interrupted": true``) and writes it, instead of dying; SIGINT while the
  model is still being built stops with exit 130 (no plan exists yet).
- ``--time-limit`` bounds the whole command: every CP-SAT solve of a solve (phase 1,
  phase 2, each step of an infeasibility explanation) gets what is left of one deadline,
  and a model build that overruns it is abandoned (exit 4).

The subprocess tests use a derived instance whose CP-SAT search runs for many seconds
(64 experts, 24 layers, 32 GPUs, skewed loads: layer placements are modelled jointly).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ortools.sat.python import cp_model

from optimizer.cpsat import budget as budget_mod
from optimizer.cpsat import explain as explain_mod
from optimizer.cpsat import search as search_mod
from optimizer.cpsat import solve as solve_mod
from optimizer.cpsat.budget import Budget, OutOfTime, building, stop_on_sigint
from optimizer.cpsat.search import PhaseResult, run_search
from optimizer.cpsat.solve import solve
from optimizer.errors import InfeasibleError
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"
PER_GPU = REPO / "instances" / "10b_moe_per_gpu.json"
_script = shutil.which("moeopt", path=str(Path(sys.executable).parent))
MOEOPT = [_script] if _script else [sys.executable, "-c", "from optimizer.cli import main; main()"]
# Interpreter, imports and writing the plan on a busy 2-core machine: generous, since these
# bounds only show that the command ends near its limit, far below the minutes it would run
# without one; the exact sharing of the deadline is checked with a fake clock below.
STARTUP_S = 15.0


def slow_instance(tmp: Path) -> Path:
    """10b_moe with 64 experts on 24 layers, 32 GPUs, skewed loads: phase 1 searches long."""
    doc = json.loads(INSTANCE.read_text())
    doc["name"] = "slow_search"
    doc["model"].update(num_experts=64, num_layers=24)
    doc["hardware"]["num_gpus"] = 32
    doc["workload"]["batch_sequences"] = 64
    doc["expert_load"] = {"kind": "power_law", "exponent": 1.0, "seed": 3}
    path = tmp / "slow_search.json"
    path.write_text(json.dumps(doc))
    return path


def _sigint_as_in_a_terminal() -> None:
    """In the child before exec: Ctrl-C delivered as in a terminal. A process started with
    SIGINT ignored (a pytest-xdist worker, nohup, a background shell) passes that on to its
    children, and Python then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _sigint_raises_keyboard_interrupt():
    """In this process too (the in-process tests send SIGINT to themselves): Python's
    default handler for the test's duration when the runner ignores SIGINT."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _sigint_to_main_thread() -> None:
    """Ctrl-C to this process, delivered to its main thread (where Python runs the handler).
    ``os.kill(os.getpid(), SIGINT)`` lets the kernel pick any thread: on a busy machine a
    descheduled one (a CP-SAT or pytest-xdist I/O thread) may take it so late that the
    handler runs after the test, and a KeyboardInterrupt there ends the xdist worker (the
    run then hangs). The subprocess tests above send real, process-wide signals."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


class Run:
    """A ``moeopt`` subprocess whose stderr is read line by line as it comes."""

    def __init__(self, *args, cwd: Path):
        self.proc = subprocess.Popen(MOEOPT + [str(a) for a in args], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True,
                                     preexec_fn=_sigint_as_in_a_terminal)
        self.lines: list[str] = []
        self._out: list[str] = []
        self._seen = threading.Condition()
        self._readers = [threading.Thread(target=self._read_err, daemon=True),
                         threading.Thread(target=lambda: self._out.append(self.proc.stdout.read()), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_err(self):
        for line in self.proc.stderr:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_for(self, text: str, timeout: float = 120.0) -> bool:
        end = time.monotonic() + timeout
        with self._seen:
            while not any(text in line for line in self.lines):
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return any(text in line for line in self.lines)
                self._seen.wait(min(left, 0.2))
        return True

    def finish(self, timeout: float) -> int:
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(10)
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # only the group this test started
            self.proc.wait()


def without_debug(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(("INFO:", "DEBUG:")))


# ------------------------------------------------------------------ Ctrl-C, end to end


@pytest.mark.slow
def test_sigint_during_the_search_prints_the_best_plan(tmp_path):
    inst = slow_instance(tmp_path)
    plan = tmp_path / "plan.json"
    run = Run("solve", inst, "--format", "json", "--output", plan, "--time-limit", "300", "-v", cwd=tmp_path)
    try:
        assert run.wait_for("phase 1:"), run.stderr
        time.sleep(1.0)
        if run.proc.poll() is not None:
            pytest.skip("the search ended before the interrupt could be sent")
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        code = run.finish(timeout=60)
        after = time.monotonic() - sent
    finally:
        run.kill()
    assert code == 0, run.stderr
    # generous (a busy machine), yet far below the 300 s limit the search would run to
    assert after < 60, f"{after:.1f} s from SIGINT to exit"
    assert "Traceback" not in run.stderr
    assert "moeopt: interrupted" in run.stderr
    doc = json.loads(run.stdout)
    assert doc["status"] == "feasible"
    assert doc["solver"]["interrupted"] is True
    assert doc["solver"]["gap"] is not None and 0 <= doc["solver"]["gap"] <= 1
    assert doc["solver"]["bound"] <= doc["solver"]["objective"]
    assert json.loads(plan.read_text()) == doc  # written too, whole
    checked = subprocess.run(MOEOPT + ["check", str(inst), str(plan)], capture_output=True, text=True,
                             cwd=tmp_path, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_sigint_while_building_the_model_stops_with_130(tmp_path):
    inst = slow_instance(tmp_path)
    run = Run("solve", inst, "--output", tmp_path / "plan.json", "--time-limit", "300", "-v", cwd=tmp_path)
    try:
        assert run.wait_for("solve slow_search on"), run.stderr
        run.proc.send_signal(signal.SIGINT)
        code = run.finish(timeout=30)
    finally:
        run.kill()
    if code == 0:
        pytest.skip("the build ended before the interrupt arrived")
    assert code == 130, run.stderr
    assert "Traceback" not in run.stderr
    assert without_debug(run.stderr).strip().splitlines()[-1] == "moeopt: interrupted"
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.slow
def test_sigint_during_a_sweep_exits_130_cleanly(tmp_path):
    """Commands without a best-plan-so-far (sweep, pareto) stop on Ctrl-C as usual: exit 130,
    one line, the search ended before the interpreter exits (else C++ aborts the process),
    and no point file for the count that was cut short."""
    inst = slow_instance(tmp_path)
    out = tmp_path / "sweep"
    run = Run("sweep", inst, "--gpus", "32", "--output", out, "--time-limit", "300", "-v", cwd=tmp_path)
    try:
        assert run.wait_for("phase 1:"), run.stderr
        time.sleep(0.5)
        run.proc.send_signal(signal.SIGINT)
        code = run.finish(timeout=60)
    finally:
        run.kill()
    assert code == 130, run.stderr
    assert "terminate called" not in run.stderr and "Traceback" not in run.stderr
    assert without_debug(run.stderr).strip().splitlines()[-1] == "moeopt: interrupted"
    assert not (out / "sweep-points" / "32.json").exists()


# ------------------------------------------------------------------ Ctrl-C, the mechanism


def _hard_model() -> cp_model.CpModel:
    """A model CP-SAT does not finish within seconds (n queens with a weighted objective)."""
    n = 60
    model = cp_model.CpModel()
    x = [model.new_int_var(0, n - 1, f"x{i}") for i in range(n)]
    model.add_all_different(x)
    model.add_all_different([x[i] + i for i in range(n)])
    model.add_all_different([x[i] - i for i in range(n)])
    model.minimize(sum((i % 7) * x[i] for i in range(n)))
    return model


def _solver(seconds: float) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = 1
    return solver


def test_stop_on_sigint_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGINT)
    budget = Budget(10)
    with stop_on_sigint(budget):
        assert signal.getsignal(signal.SIGINT) is not before
        _sigint_to_main_thread()  # first: marks the budget, raises nothing
        time.sleep(0.05)
        assert budget.interrupted and budget.left() == 0
        with pytest.raises(KeyboardInterrupt):  # second: aborts as usual
            _sigint_to_main_thread()
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_real_sigint_stops_the_search_at_once():
    budget = Budget(60)
    timer = threading.Timer(0.5, _sigint_to_main_thread)
    start = time.monotonic()
    with stop_on_sigint(budget):
        timer.start()
        status = run_search(_solver(600), _hard_model(), budget)
    assert time.monotonic() - start < 60  # generous, yet far below the search's 600 s
    assert budget.interrupted
    assert status in (cp_model.FEASIBLE, cp_model.UNKNOWN)


def test_keyboard_interrupt_ends_the_search_before_it_propagates():
    """Without stop_on_sigint, Ctrl-C is a KeyboardInterrupt as usual; the search thread
    is stopped and finished before it propagates."""
    timer = threading.Timer(0.5, _sigint_to_main_thread)
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_search(_solver(600), _hard_model())
    assert time.monotonic() - start < 60  # generous, yet far below the search's 600 s
    end = time.monotonic() + 2
    while any(t.name == "cp-sat" and t.is_alive() for t in threading.enumerate()) and time.monotonic() < end:
        time.sleep(0.01)
    assert not any(t.name == "cp-sat" and t.is_alive() for t in threading.enumerate())


class _LateStartingSolver:
    """A stand-in for CpSolver whose search begins only after a delay (a helper thread that
    has not been scheduled yet on a busy machine): like CpSolver, a stop sent before the
    search has begun is lost; once begun, the search runs until stopped."""

    def __init__(self, start_delay_s: float):
        self.start_delay_s = start_delay_s
        self.begun = threading.Event()
        self.stopped = threading.Event()

    def solve(self, model):
        time.sleep(self.start_delay_s)
        self.begun.set()
        self.stopped.wait(600)
        return cp_model.FEASIBLE

    def stop_search(self):
        if self.begun.is_set():  # before the search has begun, the stop does nothing
            self.stopped.set()


def test_keyboard_interrupt_before_the_search_begins_still_stops_it(monkeypatch):
    """Ctrl-C arriving before the helper thread's search has begun: the stop is repeated
    until the search has returned, so the search cannot outlive the interrupt (it used to
    be sent once, lost, and the command hung until its time limit)."""
    solver = _LateStartingSolver(start_delay_s=0.5)
    hits = []

    class InterruptedOnce(threading.Event):
        """The waiting thread's first poll of the search (wait(0.1)) is hit by Ctrl-C."""

        def wait(self, timeout=None):
            if timeout == 0.1 and not hits:
                hits.append(timeout)
                raise KeyboardInterrupt
            return super().wait(timeout)

    monkeypatch.setattr(search_mod.threading, "Event", InterruptedOnce)
    with pytest.raises(KeyboardInterrupt):
        search_mod._solve_in_thread(solver, None, None)
    monkeypatch.undo()
    assert hits  # the interrupt came before the search had begun (0.5 s later)
    assert solver.begun.is_set() and solver.stopped.is_set()
    helper = [t for t in threading.enumerate() if t.name == "cp-sat"]
    for thread in helper:
        thread.join(5)
    assert not any(t.is_alive() for t in helper)


def test_no_search_starts_after_an_interrupt():
    budget = Budget(60)
    budget.interrupt()
    solver = _solver(600)
    start = time.monotonic()
    status = run_search(solver, _hard_model(), budget)
    assert solver.parameters.max_time_in_seconds == 0.0  # deterministic: no time given
    assert status == cp_model.UNKNOWN
    assert time.monotonic() - start < 60  # generous, yet far below the search's 600 s


def test_sigint_in_a_model_build_raises_out_of_time():
    budget = Budget(60)
    with stop_on_sigint(budget), pytest.raises(OutOfTime):
        with building(budget):
            _sigint_to_main_thread()
            time.sleep(2)
    assert budget.interrupted


# ------------------------------------------------------------------ time limits


@pytest.mark.slow
def test_a_model_build_past_the_deadline_is_abandoned():
    budget = Budget(0.2)
    start = time.monotonic()
    with pytest.raises(OutOfTime):
        with building(budget):
            while True:  # stands for a build that never ends
                pass
    assert time.monotonic() - start < 0.2 + budget.grace + 30  # generous: the loop never ends by itself
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0  # disarmed
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)


def test_explanation_steps_share_one_deadline(monkeypatch):
    """Every CP-SAT solve of an infeasible solve (the first, then each explanation step)
    gets what is left of the one deadline, none the full limit afresh. Deterministic: the
    budget's clock is fake and advances 0.5 s per solver made (as if each search used
    0.5 s), so the k-th solver must be given exactly limit - 0.5 k seconds."""
    inst = load_model(PER_GPU, Instance, "instance")
    limit, step = 4.0, 0.5
    now = [1000.0]
    monkeypatch.setattr(budget_mod, "clock", lambda: now[0])
    given = []
    real = search_mod.make_solver

    def recording(settings, time_limit_s):
        given.append(time_limit_s)
        now[0] += step
        return real(settings, time_limit_s)

    monkeypatch.setattr(solve_mod, "make_solver", recording)
    monkeypatch.setattr(explain_mod, "make_solver", recording)
    with pytest.raises(InfeasibleError) as info:
        solve(inst, time_limit_s=limit)
    # phase 1 is infeasible, then at least the conflict core and one deletion step
    assert len(given) >= 3, given
    assert given == [limit - step * k for k in range(len(given))]
    assert sum(step for _ in given) <= limit  # all of them fit in the one limit
    assert info.value.payload["conflicts"]


def test_explanation_stops_when_the_deadline_has_passed(monkeypatch):
    """With a clock that jumps past the deadline at the first solver made, no later step
    starts a search: the explanation says it was cut short."""
    inst = load_model(PER_GPU, Instance, "instance")
    now = [1000.0]
    monkeypatch.setattr(budget_mod, "clock", lambda: now[0])
    given = []
    real = search_mod.make_solver

    def recording(settings, time_limit_s):
        given.append(time_limit_s)
        now[0] += 100.0
        return real(settings, time_limit_s)

    monkeypatch.setattr(solve_mod, "make_solver", recording)
    monkeypatch.setattr(explain_mod, "make_solver", recording)
    with pytest.raises(InfeasibleError) as info:
        solve(inst, time_limit_s=4.0)
    assert given == [4.0]  # phase 1 only: builds after the deadline (+ grace) are abandoned
    assert info.value.payload["conflicts_minimal"] is False


@pytest.mark.slow
def test_solve_with_a_time_limit_returns_a_plan_with_its_gap(tmp_path):
    inst = slow_instance(tmp_path)
    limit = 4.0
    start = time.monotonic()
    res = subprocess.run(MOEOPT + ["solve", str(inst), "--time-limit", str(limit), "--format", "json",
                                   "--output", "-"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    wall = time.monotonic() - start
    assert res.returncode in (0, 4), res.stderr
    assert wall < limit * 1.1 + 1 + STARTUP_S, f"{wall:.1f} s for --time-limit {limit}"
    doc = json.loads(res.stdout)
    if res.returncode == 4:
        assert doc["status"] == "unknown"
        return
    assert doc["status"] in ("feasible", "optimal")
    assert doc["solver"]["gap"] is not None


@pytest.mark.slow
def test_a_build_that_overruns_the_limit_exits_4_promptly(tmp_path):
    """65,536 GPUs and 10 million sequences: costing every configuration alone takes
    minutes; with --time-limit 2 the command ends in seconds with exit 4."""
    doc = json.loads(INSTANCE.read_text())
    doc["name"] = "huge"
    doc["hardware"]["num_gpus"] = 65536
    doc["workload"]["batch_sequences"] = 10**7
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(doc))
    limit = 2.0
    start = time.monotonic()
    res = subprocess.run(MOEOPT + ["solve", str(path), "--time-limit", str(limit), "--format", "json",
                                   "--output", "-"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    wall = time.monotonic() - start
    assert res.returncode == 4, res.stderr
    assert wall < limit * 1.1 + 1 + STARTUP_S, f"{wall:.1f} s"
    assert json.loads(res.stdout)["status"] == "unknown"
    assert res.stderr.count("\n") == 1 and "time limit of 2 s" in res.stderr


def test_without_a_solver_solution_the_greedy_plan_is_returned(monkeypatch):
    """When CP-SAT finds nothing in time, the greedy warm start (which meets every
    requirement) is the plan: "feasible", with the bound of the best configuration."""
    inst = load_model(INSTANCE, Instance, "instance")
    real = search_mod.run_phase

    def nothing(solver, model, budget=None):
        result = real(solver, model, budget)
        return PhaseResult("unknown", None, None, result.wall_s)

    monkeypatch.setattr(solve_mod, "run_phase", nothing)
    result = solve(inst, time_limit_s=10)
    assert result.status == "feasible"
    assert result.extra.get("greedy") is True
    assert result.evaluation.feasible
    assert result.primary.bound <= result.primary.objective
    assert result.primary.gap is not None
