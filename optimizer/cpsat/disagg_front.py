"""The most goodput per GPU of a disaggregated service (``disagg_model.DisaggModel``), exact and
linear: Dinkelbach's method on integer scores.

Goodput per GPU is G / N (G the deployment's goodput score, N its GPUs), a ratio CP-SAT cannot
maximize directly. With the best ratio found so far a / b (a deployment of score a on b GPUs),
each step maximizes the linear ``b G - a N``:
- a positive optimum is a deployment of a higher ratio: it becomes a / b, and again;
- an optimum of 0 proven by CP-SAT means no deployment beats a / b: the ratio is optimal.
Each step raises the ratio among finitely many deployments, so the loop ends. A step cut by
the time limit with a bound B > 0 leaves the ratio unproven with the upper bound
(a + B) / b (every deployment has b G - a N <= B and N >= 1), reported as the gap.
Among the deployments of the best ratio the fewest GPUs are then taken (``b G - a N >= 0``
kept, N minimized).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from optimizer.cpsat.disagg_model import DisaggModel


@dataclass(frozen=True)
class PerGpuChoice:
    """Chosen candidate indices and replica counts, their goodput score and GPUs, and the proof."""

    prefill: int
    decode: int
    prefill_replicas: int
    decode_replicas: int
    goodput_score: int
    gpus: int
    proven: bool  # CP-SAT proved no deployment has a higher goodput per GPU
    ratio_bound: float  # an upper bound on goodput score per GPU (= the ratio when proven)
    solves: int

    @property
    def gap(self) -> float:
        ratio = self.goodput_score / self.gpus
        return 0.0 if self.proven or ratio <= 0 else (self.ratio_bound - ratio) / ratio


def _solver(deadline: float, workers: int, seed: int) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.05, deadline - time.monotonic())
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    solver.parameters.catch_sigint_signal = False
    return solver


def _read(model: DisaggModel, solver: cp_model.CpSolver) -> tuple[int, int, int, int, int, int]:
    """(prefill index, decode index, their replicas, goodput score, GPUs) of the solution."""
    i = next(k for k, y in enumerate(model.yp) if solver.boolean_value(y))
    j = next(k for k, y in enumerate(model.yd) if solver.boolean_value(y))
    return (i, j, solver.value(model.xp[i]), solver.value(model.xd[j]),
            solver.value(model.score["goodput"]), solver.value(model.gpus))


def best_goodput_per_gpu(model: DisaggModel, time_limit_s: float, workers: int = 1,
                         seed: int = 0) -> PerGpuChoice | None:
    """The deployment of highest goodput per GPU (module doc); None when CP-SAT finds none
    (``model.last_status`` says whether that was proven infeasible or a time-out)."""
    deadline = time.monotonic() + time_limit_s
    m, goodput, gpus = model.model, model.score["goodput"], model.gpus
    m.maximize(goodput)
    solver = _solver(deadline, workers, seed)
    status = solver.solve(m)
    model.last_status = solver.status_name(status).lower()
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    best = _read(model, solver)
    solves, proven, bound = 1, False, None
    while best[4] > 0:
        a, b = best[4], best[5]
        m.maximize(b * goodput - a * gpus)
        solver = _solver(deadline, workers, seed)
        status = solver.solve(m)
        solves += 1
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            break  # out of time before any solution: no bound either
        value = round(solver.objective_value)
        if value > 0:
            best = _read(model, solver)
            continue
        if status == cp_model.OPTIMAL:
            proven = True
        else:
            bound = (a + max(0, round(solver.best_objective_bound))) / b
        break
    if best[4] == 0:  # no deployment serves anything: every ratio is 0 (proven by the first solve)
        proven = status == cp_model.OPTIMAL
    if proven:
        best, solves = _fewest_gpus(model, best, deadline, workers, seed, solves)
    ratio = best[4] / best[5]
    return PerGpuChoice(*best, proven, ratio if proven else (bound if bound is not None else float("inf")),
                        solves)


def _fewest_gpus(model: DisaggModel, best, deadline: float, workers: int, seed: int, solves: int):
    """Among deployments of at least the ratio of ``best``, the fewest GPUs (kept when unproven)."""
    a, b = best[4], best[5]
    m = model.model
    m.add(b * model.score["goodput"] - a * model.gpus >= 0)
    m.minimize(model.gpus)
    solver = _solver(deadline, workers, seed)
    status = solver.solve(m)
    if status != cp_model.OPTIMAL:
        return best, solves + 1
    return _read(model, solver), solves + 1
