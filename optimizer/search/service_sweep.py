"""``moeopt sweep`` on a service: one service solve (``cpsat.service_solve``) per GPU count,
with the chosen objective, and one row per count: the chosen configuration and knobs, its
goodput and throughput per GPU, TTFT and TPOT at the SLO percentile at the operating rate
(the instance's arrival rate, else the goodput), and whether it meets every requirement.

The time limit is shared among the counts as the static sweep shares it
(``sweep.point_seconds``): each count's solve gets its share; counts run one after another,
or ``jobs`` at a time in worker processes.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from optimizer.errors import InfeasibleError, InputError, MoeoptError
from optimizer.inputs.schema import Instance
from optimizer.search.sweep import _die_with_parent, point_seconds, with_gpus

COLUMNS = ["num_gpus", "meets_requirements", "status", "degrees", "max_running_requests",
           "prefill_chunk_tokens", "goodput_rps", "goodput_rps_per_gpu", "output_tokens_per_s_per_gpu",
           "max_output_tokens_per_s_per_gpu", "rate_rps", "ttft_s", "tpot_ms", "tokens_per_s_per_user",
           "why_not"]


def service_point(inst_json: str, gpus: int, objective: str, seconds: float, trace=None) -> dict:
    """One row of the service sweep (JSON-ready; runs in any process)."""
    from optimizer.cpsat.service_solve import solve_service
    from optimizer.plan.service import peak_memory_bytes, service_metrics
    inst = with_gpus(Instance.model_validate_json(inst_json), gpus)
    row: dict = {"num_gpus": gpus, "meets_requirements": False}
    try:
        result = solve_service(inst, gpus, objective, seconds, trace=trace)
    except InfeasibleError as exc:
        return {**row, "status": "infeasible", "why_not": str(exc)}
    except InputError as exc:
        return {**row, "status": "no admissible configuration", "why_not": str(exc)}
    except MoeoptError as exc:
        return {**row, "status": "unknown", "why_not": str(exc)}
    c, d, k = result.chosen, result.chosen.deg, result.chosen.knobs
    m = service_metrics(c, peak_memory_bytes(inst, result.plan, k, result.load))
    at = c.at_rate if c.at_rate is not None else c.at_goodput
    p = result.slo.percentile
    return {**row, "meets_requirements": c.meets_rate is not False, "status": result.status,
            "degrees": f"tp{d.tp} pp{d.pp} dp{d.dp} ep{d.ep} etp{d.etp} edp{d.edp}",
            "max_running_requests": k.max_running_requests, "prefill_chunk_tokens": k.prefill_chunk_tokens,
            "goodput_rps": c.goodput_rps, "goodput_rps_per_gpu": c.goodput_rps_per_gpu,
            "output_tokens_per_s_per_gpu": m["output_tokens_per_s_per_gpu"],
            "max_output_tokens_per_s_per_gpu": c.throughput_tokens_per_s_per_gpu,
            "rate_rps": at.rate_rps, "ttft_s": at.ttft_at(p), "tpot_ms": at.tpot_at(p),
            "tokens_per_s_per_user": 1000.0 / at.tpot_at(p) if at.tpot_at(p) > 0 else float("inf"),
            "why_not": ""}


def service_sweep(inst: Instance, counts: list[int], objective: str, time_limit_s: float, jobs: int = 1,
                  trace=None) -> pd.DataFrame:
    """One row per GPU count (``COLUMNS``), by GPU count."""
    payload = inst.model_dump_json()
    parallel = min(jobs, len(counts))
    seconds = point_seconds(time_limit_s, len(counts), parallel)
    if parallel > 1:
        with ProcessPoolExecutor(max_workers=parallel, initializer=_die_with_parent) as pool:
            rows = list(pool.map(service_point, [payload] * len(counts), counts, [objective] * len(counts),
                                 [seconds] * len(counts), [trace] * len(counts)))
    else:
        rows = [service_point(payload, g, objective, seconds, trace) for g in counts]
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("num_gpus", kind="stable").reset_index(drop=True)


def smallest_meeting(table: pd.DataFrame) -> int | None:
    ok = table[table["meets_requirements"].astype(bool)]
    return int(ok["num_gpus"].min()) if len(ok) else None
