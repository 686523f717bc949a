"""Pareto sets of deployments: throughput per GPU (max), TTFT (min), load imbalance (min),
communication (min).

For a fixed GPU count, throughput per GPU is set by the batch makespan and TTFT by the
prefill makespan (the same number without decode), so the front is over (makespan, TTFT,
imbalance, communication). All are
non-decreasing in each layer's hot-rank load, so one placement (the per-layer min-max, proven
by CP-SAT in ``bounding.min_hot_load``) is best for all of them at once; imbalance and
communication then no longer depend on the layer split, and only the makespan needs the
split. Each configuration whose lower-bound vector is not dominated by a point already
found gets its own CP-SAT solves (makespan over the split, memory enforced; with decode,
an epsilon-constraint loop on TTFT gives every split that trades throughput for TTFT);
the front is the non-dominated set of those points. A point is ``proven`` when CP-SAT
proved its makespan and every layer's placement optimal.

The time limit bounds the whole table: every build and CP-SAT solve shares one Budget.
Configurations it leaves no time for are not solved; the table then says so in
``df.attrs["unsolved"]`` (their number) and its front may miss points.

Points that miss a timing requirement stay in the table with ``feasible`` false: the front
is over every deployment that fits in memory, so it shows what a requirement costs.
"""

from __future__ import annotations

import pandas as pd

import logging
from dataclasses import replace

from optimizer.costs.config_bounds import config_bounds
from optimizer.costs.tables import StageCosts
from optimizer.costs.timing import communication_ns
from optimizer.cpsat.budget import MIN_SOLVE_S, Budget, OutOfTime, building
from optimizer.cpsat.context import ModelData
from optimizer.cpsat.model import build_context
from optimizer.cpsat.pruning import exact_hot_loads
from optimizer.cpsat.search import SolverSettings, build_model, extract_plan, make_solver, run_phase
from optimizer.errors import NoSolutionError
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import evaluate

log = logging.getLogger(__name__)

OBJECTIVES = {"throughput_tokens_per_ms_per_gpu": "max", "ttft_s": "min", "load_imbalance": "min",
              "communication_ms": "min"}
COLUMNS = ["num_gpus", "tp", "pp", "dp", "ep", "etp", "edp", "micro_batches",
           "throughput_tokens_per_ms", "throughput_tokens_per_ms_per_gpu", "ttft_s",
           "max_memory_gb", "load_imbalance", "communication_ms", "feasible", "pareto", "proven"]
SORT_KEY = ["num_gpus", "ttft_s", "load_imbalance", "communication_ms"]


def non_dominated(df: pd.DataFrame, objectives: dict[str, str]) -> pd.Series:
    """Boolean mask of the rows no other row dominates (<= everywhere, < somewhere)."""
    values = df[list(objectives)].copy()
    for col, sense in objectives.items():
        if sense == "max":
            values[col] = -values[col]
    arr = values.to_numpy()
    mask = []
    for i in range(len(arr)):
        le = (arr <= arr[i]).all(axis=1)
        lt = (arr < arr[i]).any(axis=1)
        mask.append(not (le & lt).any())
    return pd.Series(mask, index=df.index)


def _dominated(vector: tuple, points: list[tuple]) -> bool:
    """True when some found point is <= ``vector`` in every objective."""
    return any(all(p <= v for p, v in zip(point, vector)) for point in points)


def _solve_one(inst: Instance, base: ModelData, config: StageCosts, settings: SolverSettings,
               budget: Budget, ttft_cap: int | None = None):
    """Smallest batch makespan of configuration ``config`` (memory enforced, timing not),
    with TTFT <= ``ttft_cap``; then the smallest TTFT at that makespan, within ``budget``.
    Returns (proven, plan) or (False, None) when nothing fits."""
    data = replace(base, cfgs=(config,), limits_ns={} if ttft_cap is None else {"ttft": ttft_cap})
    with building(budget):
        dm = build_model(data, relax=("tpot", "throughput"))
    if dm.empty:
        return False, None
    dm.model.minimize(dm.makespan)
    solver = make_solver(settings, budget.left())
    first = run_phase(solver, dm.model, budget)
    if first.objective is None:
        return False, None
    plan, proven = extract_plan(inst, dm, solver), first.status == "optimal"
    if data.decoding and config.deg.pp > 1 and proven:  # same makespan, least TTFT
        dm.model.add(dm.makespan <= first.objective)
        dm.model.minimize(dm.ttft)
        solver.parameters.max_time_in_seconds = max(budget.left(), MIN_SOLVE_S)
        second = run_phase(solver, dm.model, budget)
        if second.objective is not None:
            plan, proven = extract_plan(inst, dm, solver), second.status == "optimal"
    return proven, plan


def _config_points(inst: Instance, base: ModelData, c: StageCosts, settings: SolverSettings, budget: Budget):
    """Every non-dominated (makespan, TTFT) point of one configuration: without decode, or
    with one stage, there is one; with decode the split trades batch time for TTFT, so
    the TTFT cap is tightened below each point found (epsilon-constraint) until none fits."""
    points, cap = [], None
    while True:
        proven, plan = _solve_one(inst, base, c, settings, budget, cap)
        if plan is None:
            return points
        ev = evaluate(inst, plan)
        points.append((proven, plan, ev))
        if not base.decoding or c.deg.pp == 1:
            return points
        cap = ev.ttft_ns - 1


def pareto_table(inst: Instance, num_gpus: int | None = None, settings: SolverSettings | None = None,
                 budget: Budget | None = None) -> pd.DataFrame:
    """One row per computed deployment of ``inst`` on ``num_gpus`` GPUs, with the ``pareto``
    column marking the front; rows sorted by ``SORT_KEY``. Everything stays within
    ``budget`` (default: the settings' time limit from now); configurations it leaves no
    time for are counted in ``attrs["unsolved"]``. NoSolutionError (exit 4) when the
    time runs out before the candidates are even costed."""
    settings = settings or SolverSettings.of(inst)
    budget = budget or Budget(settings.time_limit_s)
    gpus = num_gpus or inst.hardware.num_gpus
    try:
        with building(budget):
            base = build_context(inst, gpus)
            exact = exact_hot_loads(base.loads, base.values_of("ep"))
    except OutOfTime:
        raise NoSolutionError(f"no deployment computed within the time limit of {settings.time_limit_s:g} s "
                              f"(costing the configurations took all of it)") from None
    lower = {ep: [h.lower for h in rows] for ep, rows in exact.items()}
    proven_placement = {ep: all(h.lower == h.upper for h in rows) for ep, rows in exact.items()}
    candidates = []
    for c in base.cfgs:
        b = config_bounds(c, lower[c.deg.ep], base.moe_ids, base.memory_cap_bytes)
        if b.memory_fits:
            hot = lower[c.deg.ep]
            imbalance = max((x * c.deg.ep for x in hot), default=0)
            candidates.append(((b.makespan_ns, b.ttft_ns, imbalance, communication_ns(c, hot)), c))
    candidates.sort(key=lambda item: item[0])
    rows, found, unsolved = [], [], 0
    for bound_vector, c in candidates:
        if _dominated(bound_vector, found):
            continue
        if budget.expired:
            unsolved += 1
            continue
        try:
            points = _config_points(inst, base, c, settings, budget)
        except OutOfTime:
            unsolved += 1
            continue
        for proven, plan, ev in points:
            hot_units = max((x * plan.deg.ep for x in ev.hot_loads), default=0)
            found.append((ev.makespan_ns, ev.ttft_ns, hot_units, ev.communication_ns))
            rows.append(_row(plan, ev, proven and proven_placement[plan.deg.ep]))
    if unsolved:
        log.info("pareto on %d GPUs: the time limit of %g s left %d configuration(s) unsolved",
                    gpus, settings.time_limit_s, unsolved)
    table = finish_table(pd.DataFrame(rows, columns=COLUMNS[:-2] + ["proven"]))
    table.attrs["unsolved"] = unsolved
    return table


def _row(plan, ev, proven: bool) -> dict:
    d, m = plan.deg, ev.metrics()
    return {"num_gpus": d.num_gpus, "tp": d.tp, "pp": d.pp, "dp": d.dp, "ep": d.ep, "etp": d.etp,
            "edp": d.edp, "micro_batches": d.micro_batches, **{k: m[k] for k in COLUMNS[8:14]},
            "feasible": ev.feasible, "proven": proven}


def finish_table(df: pd.DataFrame, objectives: dict[str, str] | None = None) -> pd.DataFrame:
    """Mark the non-dominated rows and sort by the stated key."""
    objectives = objectives or OBJECTIVES
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    df = df.copy()
    df["pareto"] = non_dominated(df, objectives)
    return df.sort_values(SORT_KEY, kind="stable").reset_index(drop=True)[COLUMNS]
