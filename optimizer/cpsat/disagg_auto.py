"""The aggregated side of ``moeopt solve --mode auto``: ``service_solve.solve_service``, whose
default search evaluates one knob tuple per group and is exact (that module's doc)."""

from __future__ import annotations

from optimizer.cpsat.service_solve import ServiceResult, solve_service
from optimizer.inputs.schema import Instance


def solve_agg_for_auto(inst: Instance, num_gpus: int | None, objective: str | None, time_limit_s: float,
                       workers: int | None, seed: int | None, trace=None) -> ServiceResult:
    """The aggregated optimum, as ``moeopt solve --mode agg``; InfeasibleError as ``solve_service``."""
    return solve_service(inst, num_gpus, objective, time_limit_s, workers, seed, trace)
