"""The fewest GPUs of a disaggregated deployment serving a request rate within the SLOs.

One candidate enumeration (``costs.serving.disagg_search``, without an arrival rate) on the
largest allowed GPU count, replica sizes up to ``max_replica_gpus`` (decode configurations
that cannot beat a deployment already found for any of the rates asked are not evaluated);
then, per rate R, the
``disagg_model`` with goodput >= R and the GPUs one of the allowed counts, minimizing GPUs.
Goodput >= R means every pool serves R / replicas per replica within its SLO (monotone in the
rate), so the deployment meets the SLOs at R.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from optimizer.costs.serving.disagg_search import PoolSearch, pool_candidates
from optimizer.costs.units import rate_target_to_int
from optimizer.cpsat.budget import MIN_SOLVE_S
from optimizer.cpsat.disagg_model import DisaggChoice, DisaggModel
from optimizer.cpsat.disagg_solve import DisaggInputs, check_disagg_instance, disagg_inputs, pool_plan
from optimizer.inputs.schema import Instance
from optimizer.plan.pools import DisaggEvaluation, evaluate_disagg


@dataclass(frozen=True)
class DisaggSize:
    """The answer for one rate: the fewest GPUs (None: no allowed count serves it)."""

    rate_rps: float
    num_gpus: int | None
    status: str  # "optimal" (proven fewest) | "feasible" (gap stated) | "infeasible" | "unknown"
    bound_gpus: int | None  # CP-SAT's lower bound on the GPUs
    choice: DisaggChoice | None
    evaluation: DisaggEvaluation | None
    wall_s: float


class DisaggSizer:
    """Candidates enumerated once; ``size(rate)`` solves one small model per rate."""

    def __init__(self, inst: Instance, allowed_gpus: list[int], max_replica_gpus: int, trace=None,
                 rates: list[float] | None = None):
        check_disagg_instance(inst)
        self.allowed = sorted(allowed_gpus)
        top = self.allowed[-1]
        # the instance on the largest count, without a rate (the rate is the question)
        workload = inst.workload.model_copy(update={"arrival_rate_rps": None})
        requirements = inst.requirements.model_copy(update={"min_goodput_rps": None})
        hardware = inst.hardware.model_copy(update={"num_gpus": top})
        self.inst = inst.model_copy(update={"hardware": hardware, "workload": workload,
                                            "requirements": requirements})
        start = time.perf_counter()
        self.shared: DisaggInputs = disagg_inputs(self.inst, min(top, max_replica_gpus + 1), trace)
        self.found: PoolSearch = pool_candidates(
            self.inst, top, self.shared.load, self.shared.slo, None, self.shared.loads, self.shared.ranks_by_ep,
            max_replica_gpus=max_replica_gpus, allowed_gpus=self.allowed,
            size_targets=None if rates is None else sorted({rate_target_to_int(r) for r in rates}))
        self.enumerate_s = time.perf_counter() - start

    def size(self, rate_rps: float, time_limit_s: float, workers: int = 1, seed: int = 0) -> DisaggSize:
        start = time.perf_counter()
        if not self.found.prefill or not self.found.decode:
            return DisaggSize(rate_rps, None, "infeasible", None, None, None, 0.0)
        model = DisaggModel(self.found.prefill, self.found.decode, self.allowed[-1],
                            self.inst.hardware.gpus_per_node, rate_target_to_int(rate_rps),
                            allowed_gpus=self.allowed)
        choice = model.solve([("gpus", "min")], max(MIN_SOLVE_S, time_limit_s), workers, seed)
        if choice is None:
            status = "infeasible" if model.last_status == "infeasible" else "unknown"
            return DisaggSize(rate_rps, None, status, None, None, None, time.perf_counter() - start)
        phase = choice.phases[0]
        at_rate = self.inst.model_copy(update={
            "workload": self.inst.workload.model_copy(update={"arrival_rate_rps": rate_rps})})
        ev = evaluate_disagg(
            at_rate, self.shared.load,
            pool_plan(self.inst, self.found.prefill[choice.prefill], "prefill", choice.prefill_replicas,
                      self.shared.ranks_by_ep),
            pool_plan(self.inst, self.found.decode[choice.decode], "decode", choice.decode_replicas,
                      self.shared.ranks_by_ep))
        return DisaggSize(rate_rps, phase.value, "optimal" if choice.proven else "feasible", phase.bound,
                          choice, ev, time.perf_counter() - start)
