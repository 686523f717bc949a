"""``moeopt sweep`` on a service: per GPU count and mode, one solve with the chosen objective
and one row: the chosen configuration and knobs (per pool when disaggregated), its goodput
and throughput per GPU, TTFT and TPOT at the SLO percentile at the operating rate (the
instance's arrival rate, else the goodput), and whether it meets every requirement.

Modes: ``agg`` solves as ``moeopt solve --mode agg`` (``cpsat.service_solve``), ``disagg`` as
``--mode disagg`` (``cpsat.disagg_solve``, on at most the count's GPUs); ``auto`` gives both
rows, the one of higher goodput per GPU marked ``chosen`` (agg on a tie, as ``solve --mode
auto``).

The time limit is shared among the (count, mode) solves as the static sweep shares it
(``sweep.point_seconds``): each solve gets its share; they run one after another, or
``jobs`` at a time in worker processes.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from optimizer.errors import InfeasibleError, InputError, MoeoptError
from optimizer.inputs.schema import Instance
from optimizer.search.sweep import _die_with_parent, point_seconds, with_gpus

COLUMNS = ["num_gpus", "mode", "chosen", "meets_requirements", "status", "pools", "degrees",
           "max_running_requests", "prefill_chunk_tokens", "goodput_rps", "goodput_rps_per_gpu",
           "output_tokens_per_s_per_gpu", "max_output_tokens_per_s_per_gpu", "rate_rps", "ttft_s", "tpot_ms",
           "tokens_per_s_per_user", "why_not"]


def _degrees_text(d) -> str:
    return f"tp{d.tp} pp{d.pp} dp{d.dp} ep{d.ep} etp{d.etp} edp{d.edp}"


def service_point(inst_json: str, gpus: int, objective: str, seconds: float, trace=None,
                  mode: str = "agg") -> dict:
    """One row of the service sweep for one mode ('agg' or 'disagg'; JSON-ready; any process)."""
    inst = with_gpus(Instance.model_validate_json(inst_json), gpus)
    row: dict = {"num_gpus": gpus, "mode": mode, "chosen": False, "meets_requirements": False}
    try:
        figures = (_agg_figures if mode == "agg" else _disagg_figures)(inst, gpus, objective, seconds, trace)
    except InfeasibleError as exc:
        return {**row, "status": "infeasible", "why_not": str(exc)}
    except InputError as exc:
        return {**row, "status": "no admissible configuration", "why_not": str(exc)}
    except MoeoptError as exc:
        return {**row, "status": "unknown", "why_not": str(exc)}
    tpot = figures["tpot_ms"]
    return {**row, **figures, "tokens_per_s_per_user": 1000.0 / tpot if tpot > 0 else float("inf"),
            "why_not": ""}


def _agg_figures(inst: Instance, gpus: int, objective: str, seconds: float, trace) -> dict:
    from optimizer.cpsat.service_solve import solve_service
    from optimizer.plan.service import peak_memory_bytes, service_metrics
    result = solve_service(inst, gpus, objective, seconds, trace=trace)
    c, k = result.chosen, result.chosen.knobs
    m = service_metrics(c, peak_memory_bytes(inst, result.plan, k, result.load))
    at = c.at_rate if c.at_rate is not None else c.at_goodput
    p = result.slo.percentile
    return {"meets_requirements": c.meets_rate is not False, "status": result.status,
            "pools": f"1x{c.gpus}", "degrees": _degrees_text(c.deg),
            "max_running_requests": k.max_running_requests, "prefill_chunk_tokens": k.prefill_chunk_tokens,
            "goodput_rps": c.goodput_rps, "goodput_rps_per_gpu": c.goodput_rps_per_gpu,
            "output_tokens_per_s_per_gpu": m["output_tokens_per_s_per_gpu"],
            "max_output_tokens_per_s_per_gpu": c.throughput_tokens_per_s_per_gpu,
            "rate_rps": at.rate_rps, "ttft_s": at.ttft_at(p), "tpot_ms": at.tpot_at(p)}


def _disagg_figures(inst: Instance, gpus: int, objective: str, seconds: float, trace) -> dict:
    """A disaggregated solve meets every requirement by construction (the CP-SAT model keeps
    only pairs serving the rate within TTFT and TPOT); knobs and degrees per pool."""
    from optimizer.cpsat.disagg_solve import solve_disagg
    result = solve_disagg(inst, gpus, objective, seconds, trace=trace)
    ev, p = result.evaluation, inst.requirements.percentile
    pools = (ev.prefill, ev.decode)
    m = ev.metrics()
    return {"meets_requirements": True, "status": result.status,
            "pools": " + ".join(f"{q.replicas}x{q.gpus_per_replica} {q.role}" for q in pools),
            "degrees": " | ".join(f"{q.role} {_degrees_text(q.plan.deg)}" for q in pools),
            "max_running_requests": " | ".join(f"{q.role} {q.knobs.max_running_requests}" for q in pools),
            "prefill_chunk_tokens": " | ".join(f"{q.role} {q.knobs.prefill_chunk_tokens}" for q in pools),
            "goodput_rps": m["goodput_rps"], "goodput_rps_per_gpu": m["goodput_rps_per_gpu"],
            "output_tokens_per_s_per_gpu": m["output_tokens_per_s_per_gpu"],
            "max_output_tokens_per_s_per_gpu": m["max_output_tokens_per_s_per_gpu"],
            "rate_rps": m["rate_rps"], "ttft_s": ev.ttft_s(p), "tpot_ms": ev.decode_at.tpot_at(p)}


def service_sweep(inst: Instance, counts: list[int], objective: str, time_limit_s: float, jobs: int = 1,
                  trace=None, mode: str = "agg") -> pd.DataFrame:
    """One row per GPU count and mode (``COLUMNS``), by GPU count then mode (agg first)."""
    modes = ["agg", "disagg"] if mode == "auto" else [mode]
    tasks = [(g, m) for g in counts for m in modes]
    payload = inst.model_dump_json()
    parallel = min(jobs, len(tasks))
    seconds = point_seconds(time_limit_s, len(tasks), parallel)
    n = len(tasks)
    if parallel > 1:
        with ProcessPoolExecutor(max_workers=parallel, initializer=_die_with_parent) as pool:
            rows = list(pool.map(service_point, [payload] * n, [g for g, _ in tasks], [objective] * n,
                                 [seconds] * n, [trace] * n, [m for _, m in tasks]))
    else:
        rows = [service_point(payload, g, objective, seconds, trace, m) for g, m in tasks]
    _mark_chosen(rows)
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("num_gpus", kind="stable").reset_index(drop=True)


def _mark_chosen(rows: list[dict]) -> None:
    """Per GPU count, the row with a plan of highest goodput per GPU (agg first on a tie)."""
    by_count: dict[int, list[dict]] = {}
    for row in rows:
        by_count.setdefault(row["num_gpus"], []).append(row)
    for group in by_count.values():
        planned = [r for r in group if not r.get("why_not")]
        if planned:
            best = max(planned, key=lambda r: (r["goodput_rps_per_gpu"], r["mode"] == "agg"))
            best["chosen"] = True


def smallest_meeting(table: pd.DataFrame) -> int | None:
    ok = table[table["meets_requirements"].astype(bool)]
    return int(ok["num_gpus"].min()) if len(ok) else None
