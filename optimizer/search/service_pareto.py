"""``moeopt pareto`` on a service: the throughput-interactivity front as a table, one row per
(configuration, knob tuple) on the front (``costs.serving.pareto``), every point at the rate
the objective names (goodput: its goodput rate; throughput: its sustainable rate)."""

from __future__ import annotations

import pandas as pd

from optimizer.costs.serving.pareto import service_front
from optimizer.costs.serving.replica import service_degrees, service_load
from optimizer.costs.serving.search import prepared_groups
from optimizer.cpsat.budget import Budget
from optimizer.cpsat.service_solve import placements
from optimizer.inputs.schema import Instance
from optimizer.plan.service import service_slo

COLUMNS = ["num_gpus", "tp", "pp", "dp", "ep", "etp", "max_running_requests", "prefill_chunk_tokens",
           "prefill_micro_batches", "decode_micro_batches", "output_tokens_per_s_per_gpu",
           "tokens_per_s_per_user", "goodput_rps", "goodput_rps_per_gpu", "ttft_p90_s", "tpot_ms", "pareto"]


def service_pareto_table(inst: Instance, trace=None, objective: str = "goodput",
                         time_limit_s: float | None = None) -> pd.DataFrame:
    """Rows of the front by decreasing output tokens/s per GPU. ``time_limit_s`` (default
    ``search.time_limit_s``) bounds the search: groups it leaves no time for are not
    evaluated and counted in ``attrs["unsolved"]`` (the front may then miss points).
    ``attrs["meets"]``: per row, whether the point meets every requirement (the SLOs at the
    instance's arrival rate, and a goodput of at least ``min_goodput_rps``)."""
    budget = Budget(inst.search.time_limit_s if time_limit_s is None else time_limit_s)
    gpus = inst.hardware.num_gpus
    degrees = service_degrees(inst, gpus)
    load = service_load(inst.workload, trace)
    loads, ranks = placements(inst, list({d.ep for d in degrees}))
    groups, _ = prepared_groups(inst, gpus, load, loads, ranks, degrees)
    front = service_front(groups, load, service_slo(inst), inst.workload.arrival_rate_rps, objective,
                          out_of_time=lambda: budget.left() <= 0.0)
    rows, meets = [], []
    target = inst.requirements.min_goodput_rps
    for p in front.points:
        meets.append(p.candidate.meets_rate is not False and (target is None or p.candidate.goodput_rps >= target))
        c, d, k, m = p.candidate, p.candidate.deg, p.candidate.knobs, p.at
        rows.append([c.gpus, d.tp, d.pp, d.dp, d.ep, d.etp, k.max_running_requests, k.prefill_chunk_tokens,
                     k.prefill_micro_batches, k.decode_micro_batches, p.output_tokens_per_s_per_gpu,
                     p.tokens_per_s_per_user, c.goodput_rps, c.goodput_rps_per_gpu, m.ttft_p90_s, m.tpot_ms, True])
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs["unsolved"] = front.unvisited
    table.attrs["meets"] = meets
    return table
