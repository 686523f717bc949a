"""CP-SAT model of a service: choose one (configuration, knob tuple) among the admissible
candidates (``costs.serving.candidates``), each with precomputed integer scores.

Decisions: a one-hot ``pick`` over candidates; no product of variables. Constraints (linear
in ``pick``): the SLOs hold at the instance's arrival rate (candidates that miss them are
excluded by one row), goodput >= ``min_goodput_rps``. Objectives, lexicographic: the primary
(``goodput`` or ``throughput``) is maximized, then kept at its optimum while the other is
maximized. The expert placement inside a candidate is fixed before the model is built (see
docs/serving-model.md): each layer's MoE time only grows with its hot-rank load, so the
placement of least hot load per layer is best for every step composition at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from optimizer.costs.serving.candidates import ServiceCandidate

SERVICE_OBJECTIVES = ("goodput", "throughput")


@dataclass(frozen=True)
class ServicePhase:
    """One lexicographic phase: what was maximized, CP-SAT's status, value and bound."""

    name: str
    status: str
    value: int | None
    bound: int | None
    wall_s: float


@dataclass(frozen=True)
class ServiceChoice:
    """The chosen candidate (index) and the phases that chose it."""

    index: int
    phases: tuple[ServicePhase, ...]

    @property
    def proven(self) -> bool:
        return all(p.status == "optimal" for p in self.phases)


class ServiceModel:
    """One-hot choice over ``candidates`` with the requirement rows."""

    def __init__(self, candidates: list[ServiceCandidate], min_goodput_score: int | None = None):
        self.candidates = candidates
        self.min_goodput_score = min_goodput_score
        model = self.model = cp_model.CpModel()
        self.pick = [model.new_bool_var(f"pick[{k}]") for k in range(len(candidates))]
        model.add_exactly_one(self.pick)
        missing = [v for c, v in zip(candidates, self.pick) if c.meets_rate is False]
        if missing:
            model.add(sum(missing) == 0)  # the SLOs must hold at the instance's own rate
        self.score = {name: self._score(name) for name in SERVICE_OBJECTIVES}
        if min_goodput_score is not None:
            model.add(self.score["goodput"] >= min_goodput_score)

    def _score(self, name: str) -> cp_model.IntVar:
        values = [getattr(c, f"{name}_score") for c in self.candidates]
        var = self.model.new_int_var(0, max(values, default=0), f"{name}_score")
        self.model.add(var == sum(v * x for v, x in zip(values, self.pick)))
        return var

    def solve(self, primary: str, time_limit_s: float, workers: int = 1, seed: int = 0) -> ServiceChoice | None:
        """Lexicographic maximization, ``primary`` first; None when no candidate is feasible.
        Each phase gets what is left of ``time_limit_s``."""
        order = [primary] + [o for o in SERVICE_OBJECTIVES if o != primary]
        deadline = time.monotonic() + time_limit_s
        phases, solver = [], None
        for name in order:
            solver = cp_model.CpSolver()
            solver.parameters.max_time_in_seconds = max(0.05, deadline - time.monotonic())
            solver.parameters.num_workers = workers
            solver.parameters.random_seed = seed
            solver.parameters.catch_sigint_signal = False
            self.model.maximize(self.score[name])
            start = time.perf_counter()
            status = solver.solve(self.model)
            if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                if not phases and status == cp_model.UNKNOWN:  # out of time, not infeasible
                    return self._best_allowed(order, time.perf_counter() - start)
                if not phases:
                    return None
                break
            value = round(solver.objective_value)
            phases.append(ServicePhase(name, solver.status_name(status).lower(), value,
                                       round(solver.best_objective_bound), time.perf_counter() - start))
            index = next(k for k, v in enumerate(self.pick) if solver.boolean_value(v))
            if status != cp_model.OPTIMAL:
                break
            self.model.add(self.score[name] >= value)
            self.model.clear_hints()
            for k, v in enumerate(self.pick):
                self.model.add_hint(v, k == index)
        return ServiceChoice(index, tuple(phases))

    def _best_allowed(self, order: list[str], wall_s: float) -> ServiceChoice | None:
        """When CP-SAT found nothing in its time (a tiny remainder of the limit): the best
        candidate meeting the rows, in the objectives' lexicographic order, chosen here in
        Python (every candidate enumerated: its score is also the bound); reported with
        status "unknown", as CP-SAT did not prove it."""
        allowed = [k for k, c in enumerate(self.candidates) if c.meets_rate is not False
                   and (self.min_goodput_score is None or c.goodput_score >= self.min_goodput_score)]
        if not allowed:
            return None
        index = max(allowed, key=lambda k: tuple(getattr(self.candidates[k], f"{n}_score") for n in order))
        value = getattr(self.candidates[index], f"{order[0]}_score")
        return ServiceChoice(index, (ServicePhase(order[0], "unknown", value, value, wall_s),))
