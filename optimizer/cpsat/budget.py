"""The deadline of one command, shared by every CP-SAT solve and model build in it, and Ctrl-C.

One ``Budget`` per command holds its time limit as a deadline: each CP-SAT solve gets what is
left of it (``Budget.left``), never the full limit afresh. A model build (Python, which
CP-SAT's own limit cannot stop) runs inside ``building``, which abandons it with OutOfTime
once the deadline plus a grace has passed. Under ``stop_on_sigint`` the first SIGINT stops the
search in progress (which returns its best solution) and starts no further solve.

``clock`` is the one time source of budgets and builds (monotonic seconds); tests replace it
to check deadlines deterministically. ``cpu_clock`` (this process's CPU seconds) bounds the
one part of a build that the wall clock never cuts: the work before its first plan to fall
back on (``building`` with ``ready``). On a busy machine that work takes longer in wall time
but about the same CPU time, so a short limit still ends with a plan.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ortools.sat.python import cp_model

# The shortest CP-SAT run worth starting (s); also the least phase 1 gets when the model
# build already used up the time limit (it then usually finds the hinted greedy plan).
MIN_SOLVE_S = 0.05


def clock() -> float:
    """Monotonic seconds (``time.monotonic``); the time source of every Budget."""
    return time.monotonic()


def cpu_clock() -> float:
    """CPU seconds this process has used (every thread, ``time.process_time``)."""
    return time.process_time()


class OutOfTime(Exception):
    """Raised into a model build (pure Python, which CP-SAT's limit cannot stop) when the
    deadline plus its grace passes, or on Ctrl-C."""


class Budget:
    """The time limit of one command as a deadline shared by all its CP-SAT solves, and its
    Ctrl-C state. ``interrupt()`` (called by the SIGINT handler of ``stop_on_sigint``) stops
    the active search and leaves no time for any later one. Model builds (``building``) may
    run ``grace`` seconds past the deadline."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = clock() + seconds
        self.cpu_start = cpu_clock()
        self.grace = 1.0 + 0.1 * seconds
        self.interrupted = False
        self.building = False
        self.active: cp_model.CpSolver | None = None

    def left(self) -> float:
        """Seconds left before the deadline (0 once interrupted)."""
        return 0.0 if self.interrupted else max(0.0, self.deadline - clock())

    @property
    def expired(self) -> bool:
        """True when less than the shortest useful solve (MIN_SOLVE_S) is left."""
        return self.left() < MIN_SOLVE_S

    def cpu_left(self) -> float:
        """CPU seconds the process may still spend before its first plan: the limit plus
        the grace, counted from the budget's start."""
        return self.seconds + self.grace - (cpu_clock() - self.cpu_start)

    def interrupt(self) -> None:
        """Stop the active search (it returns its best solution) and any later one."""
        self.interrupted = True
        solver = self.active
        if solver is not None:
            solver.stop_search()  # thread-safe; the search returns its best solution


def in_main_thread() -> bool:
    """True in the main thread, the only one where Python delivers signals."""
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stop_on_sigint(budget: Budget) -> Iterator[Budget]:
    """Within the block, the first SIGINT (Ctrl-C) calls ``budget.interrupt()``: the CP-SAT
    search in progress stops and returns its best solution, and no further solve starts
    (a model build in progress is abandoned: OutOfTime). A second SIGINT raises
    KeyboardInterrupt as usual. The previous handler is restored on leaving. Signals can
    only be handled in the main thread; elsewhere this does nothing."""
    if not in_main_thread():
        yield budget
        return

    def on_sigint(signum, frame):
        if budget.interrupted:
            raise KeyboardInterrupt
        budget.interrupt()
        if budget.building:
            raise OutOfTime("interrupted")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield budget
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def building(budget: Budget, ready: Callable[[], bool] | None = None) -> Iterator[None]:
    """A model build that raises OutOfTime once the deadline plus the grace has passed
    (a SIGALRM timer: Python code stops at its next bytecode). With ``ready`` (True once
    the build has a plan to fall back on), it stops at the deadline itself when ready; while
    not ready, the wall clock does not stop it, only its CPU time past the limit plus the
    grace (``Budget.cpu_left``), so a busy machine still gets its fallback plan. The timer
    is armed only in the main thread and only when nobody else uses SIGALRM; it is
    disarmed on leaving."""
    last = budget.deadline + budget.grace
    if budget.interrupted or (ready is None and last - clock() <= 0) or (ready is not None and budget.cpu_left() <= 0):
        raise OutOfTime("no time left")
    first = budget.deadline if ready is not None else last
    armed = False
    if in_main_thread() and hasattr(signal, "setitimer"):
        previous = signal.getsignal(signal.SIGALRM)
        if previous in (signal.SIG_DFL, signal.SIG_IGN, None) and signal.getitimer(signal.ITIMER_REAL)[0] == 0:

            def on_alarm(signum, frame):
                if not budget.building:
                    return
                if ready is None or ready():
                    raise OutOfTime("time limit")
                cpu_left = budget.cpu_left()
                if cpu_left <= 0:
                    raise OutOfTime("time limit (CPU time before a first plan)")
                signal.setitimer(signal.ITIMER_REAL, max(0.01, min(0.05, cpu_left)))  # look again soon

            signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, max(0.001, first - clock()))
            armed = True
    budget.building = True
    try:
        yield
    finally:
        budget.building = False
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
