"""CP-SAT model of a disaggregated service: one prefill candidate and one decode candidate
(one-hot choices among ``costs.serving.disagg`` candidates) and integer replica counts,
all linear (no product of variables).

Variables: ``yp[i]``, ``yd[j]`` (the chosen candidates), ``xp[i]``, ``xd[j]`` (replicas of
candidate i / j, zero unless chosen: ``n_min y <= x <= n_max y``), the deployment goodput
``G`` and throughput ``T`` (integer scores of ``units``) and the GPUs in use.
Constraints:
- pool goodput = sum of per-replica score x replicas; G <= each pool's (T likewise with
  the capacities): every request crosses both pools;
- GPUs = sum of per-replica GPUs x replicas <= the budget (or one of the allowed counts);
- the transfer class of the prefill candidate matches the pair: its ``links`` equals
  min(prefill GPUs, decode GPUs) (a prefill candidate excludes the decode sizes that give
  another value), and "intra_node" holds exactly when the GPUs fit one node;
- at the instance's arrival rate each pool has at least the precomputed fewest replicas
  that serve it within the SLOs (``n_min``); G >= ``min_goodput`` when given.
Objectives, lexicographic: goodput then throughput (or the reverse), then the fewest GPUs;
or, for sizing, the fewest GPUs alone. Ties left after every phase is proven are broken by
one more solve (``_tie_key``): the fewest replicas (servers to launch), then the fewest
prefill replicas, then the earliest decode and prefill candidates in enumeration order, so
the answer does not depend on which of several equal optima a multi-worker search meets
first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from optimizer.costs.serving.disagg import INTRA_NODE, DecodeCandidate, PrefillCandidate

DISAGG_OBJECTIVES = ("goodput", "throughput")


@dataclass(frozen=True)
class Phase:
    """One lexicographic phase: what was optimized, CP-SAT's status, value and bound."""

    name: str
    sense: str  # "max" | "min"
    status: str
    value: int
    bound: int
    wall_s: float

    @property
    def gap(self) -> float:
        if self.value == self.bound:
            return 0.0
        return abs(self.bound - self.value) / max(1, abs(self.value))


@dataclass(frozen=True)
class DisaggChoice:
    """Chosen candidate indices, replica counts and the phases that chose them."""

    prefill: int
    decode: int
    prefill_replicas: int
    decode_replicas: int
    phases: tuple[Phase, ...]

    @property
    def proven(self) -> bool:
        return all(p.status == "optimal" for p in self.phases)


class DisaggModel:
    """The pair choice over ``prefill`` and ``decode`` candidates within ``max_gpus``."""

    def __init__(self, prefill: list[PrefillCandidate], decode: list[DecodeCandidate], max_gpus: int,
                 gpus_per_node: int, min_goodput_score: int | None = None,
                 allowed_gpus: list[int] | None = None, use_min_replicas: bool = True):
        self.prefill, self.decode = prefill, decode
        m = self.model = cp_model.CpModel()
        self.yp = [m.new_bool_var(f"yp[{i}]") for i in range(len(prefill))]
        self.yd = [m.new_bool_var(f"yd[{j}]") for j in range(len(decode))]
        m.add_exactly_one(self.yp)
        m.add_exactly_one(self.yd)
        self.most: dict[str, list[int]] = {}
        self.xp = self._counts("xp", prefill, self.yp, max_gpus, min(c.gpus for c in decode), use_min_replicas)
        self.xd = self._counts("xd", decode, self.yd, max_gpus, min(c.gpus for c in prefill), use_min_replicas)
        self.gpus = m.new_int_var(0, max_gpus, "gpus")
        m.add(self.gpus == sum(c.gpus * x for c, x in zip(prefill, self.xp))
              + sum(c.gpus * x for c, x in zip(decode, self.xd)))
        self._pairing(max_gpus, gpus_per_node)
        if allowed_gpus is not None:
            pick = [m.new_bool_var(f"count[{n}]") for n in allowed_gpus]
            m.add_exactly_one(pick)
            m.add(self.gpus == sum(n * v for n, v in zip(allowed_gpus, pick)))
        self.score = {name: self._pool_min(name) for name in DISAGG_OBJECTIVES}
        if min_goodput_score is not None:
            m.add(self.score["goodput"] >= min_goodput_score)

    def _counts(self, name, cands, chosen, max_gpus, other_min_gpus, use_min_replicas) -> list:
        out, self.most[name] = [], []
        for c, y in zip(cands, chosen):
            most = max(0, (max_gpus - other_min_gpus) // c.gpus)
            least = max(1, c.min_replicas or 0) if use_min_replicas else 1
            if (use_min_replicas and c.min_replicas is None) or least > most:
                self.model.add(y == 0)
                least = most = 0
            self.most[name].append(most)
            x = self.model.new_int_var(0, most, f"{name}[{len(out)}]")
            self.model.add(x <= most * y)
            self.model.add(x >= least * y)
            out.append(x)
        return out

    def _pairing(self, max_gpus: int, gpus_per_node: int) -> None:
        """The prefill candidate's transfer class must be the pair's (module doc)."""
        m = self.model
        for i, c in enumerate(self.prefill):
            wrong = [self.yd[j] for j, d in enumerate(self.decode) if min(c.gpus, d.gpus) != c.transfer.links]
            if wrong:
                m.add(self.yp[i] + sum(wrong) <= 1)
        intra = [y for c, y in zip(self.prefill, self.yp) if c.transfer.link == INTRA_NODE]
        inter = [y for c, y in zip(self.prefill, self.yp) if c.transfer.link != INTRA_NODE]
        if intra:  # intra -> the GPUs fit one node
            m.add(self.gpus <= gpus_per_node + max(0, max_gpus - gpus_per_node) * (1 - sum(intra)))
        if inter:  # inter -> they do not
            m.add(self.gpus >= (gpus_per_node + 1) * sum(inter))

    def _pool_min(self, name: str) -> cp_model.IntVar:
        """min over the pools of sum(per-replica score x replicas), as an upper-bounded var."""
        m = self.model
        pools = []
        tops = []
        for cands, counts, most in ((self.prefill, self.xp, self.most["xp"]),
                                    (self.decode, self.xd, self.most["xd"])):
            scores = [getattr(c, f"{name}_score") for c in cands]
            tops.append(max((s * n for s, n in zip(scores, most)), default=0))
            pool = m.new_int_var(0, tops[-1], f"{name}_{len(pools)}")
            m.add(pool == sum(s * x for s, x in zip(scores, counts)))
            pools.append(pool)
        var = m.new_int_var(0, min(tops), f"{name}_score")
        for pool in pools:
            m.add(var <= pool)
        return var

    def solve(self, order: list[tuple[str, str]], time_limit_s: float, workers: int = 1,
              seed: int = 0) -> DisaggChoice | None:
        """Lexicographic: each (name, "max"|"min") of ``order`` in turn ("gpus" or a score),
        the previous ones kept at their optimum; None when nothing is feasible. Each phase
        gets what is left of ``time_limit_s``; an unproven phase ends the sequence."""
        deadline = time.monotonic() + time_limit_s
        self.last_status = "unknown"
        phases: list[Phase] = []
        found = None
        for name, sense in order:
            var = self.gpus if name == "gpus" else self.score[name]
            solver = cp_model.CpSolver()
            solver.parameters.max_time_in_seconds = max(0.05, deadline - time.monotonic())
            solver.parameters.num_workers = workers
            solver.parameters.random_seed = seed
            solver.parameters.catch_sigint_signal = False
            if sense == "max":
                self.model.maximize(var)
            else:
                self.model.minimize(var)
            start = time.perf_counter()
            status = solver.solve(self.model)
            self.last_status = solver.status_name(status).lower()
            if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                if not phases:
                    return None
                break
            value = round(solver.objective_value)
            phases.append(Phase(name, sense, solver.status_name(status).lower(), value,
                                round(solver.best_objective_bound), time.perf_counter() - start))
            found = self._read(solver)
            if status != cp_model.OPTIMAL:
                break
            self.model.add(var >= value if sense == "max" else var <= value)
            self._hint(found)
        if found is not None and all(p.status == "optimal" for p in phases):
            found = self._break_ties(found, deadline, workers, seed)
        return DisaggChoice(*found, tuple(phases))

    def _tie_key(self):
        """(replicas, prefill replicas, decode index, prefill index) as one integer key,
        most significant first; each digit is below its radix."""
        n_p, n_d = len(self.prefill), len(self.decode)
        prefill_replicas = sum(self.xp)
        replicas = prefill_replicas + sum(self.xd)
        radix = 1 + sum(self.most["xp"]) + sum(self.most["xd"])
        index = sum(j * y for j, y in enumerate(self.yd)) * n_p + sum(i * y for i, y in enumerate(self.yp))
        return (replicas * radix + prefill_replicas) * (n_p * n_d) + index

    def _break_ties(self, found, deadline: float, workers: int, seed: int):
        """The optimum of ``_tie_key`` among the proven optima (the phases' values are
        already constraints); ``found`` when this solve is not proven in the time left."""
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(0.05, deadline - time.monotonic())
        solver.parameters.num_workers = workers
        solver.parameters.random_seed = seed
        solver.parameters.catch_sigint_signal = False
        self.model.minimize(self._tie_key())
        if solver.solve(self.model) == cp_model.OPTIMAL:
            return self._read(solver)
        return found

    def _read(self, solver) -> tuple[int, int, int, int]:
        i = next(k for k, y in enumerate(self.yp) if solver.boolean_value(y))
        j = next(k for k, y in enumerate(self.yd) if solver.boolean_value(y))
        return i, j, solver.value(self.xp[i]), solver.value(self.xd[j])

    def _hint(self, found: tuple[int, int, int, int]) -> None:
        i, j, xp, xd = found
        self.model.clear_hints()
        for k, y in enumerate(self.yp):
            self.model.add_hint(y, k == i)
            self.model.add_hint(self.xp[k], xp if k == i else 0)
        for k, y in enumerate(self.yd):
            self.model.add_hint(y, k == j)
            self.model.add_hint(self.xd[k], xd if k == j else 0)
