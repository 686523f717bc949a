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

Points that miss a timing requirement stay in the table with ``feasible`` false and
``misses`` naming the failed requirements (space-separated; "none" for the others), but are
never on the front: ``pareto`` is true only for a row that meets every requirement and that
no other such row dominates. When the workload decodes, the table also has ``tpot_ms`` and
``tokens_per_s_per_user`` (1000 / TPOT ms, the decode speed one request sees).

Rows equal in every objective (and in ``feasible``) are duplicates: only the first in the
table's order is kept (``SORT_KEY``, then the degrees ``tp, pp, dp, ep, etp, edp,
micro_batches`` ascending, so the smallest degrees stand for the group).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import pandas as pd

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
DEGREES = ["tp", "pp", "dp", "ep", "etp", "edp", "micro_batches"]
METRICS = ["throughput_tokens_per_ms", "throughput_tokens_per_ms_per_gpu", "ttft_s",
           "max_memory_gb", "load_imbalance", "communication_ms"]
DECODE_COLUMNS = ["tpot_ms", "tokens_per_s_per_user"]  # only when the workload decodes
MEETS_ALL = "none"  # ``misses`` of a row meeting every requirement (CSV readers keep it: "" reads as NaN)
COLUMNS = ["num_gpus", *DEGREES, *METRICS, "feasible", "pareto", "proven"]
SORT_KEY = ["num_gpus", "ttft_s", "load_imbalance", "communication_ms"]


def table_columns(df: pd.DataFrame) -> list[str]:
    """The table's columns in order: the contract's, the decode ones after ``ttft_s`` when
    present, ``misses`` after ``feasible`` when present."""
    cols = ["num_gpus", *DEGREES, *METRICS[:3], *[c for c in DECODE_COLUMNS if c in df],
            *METRICS[3:], "feasible", *(["misses"] if "misses" in df else []), "pareto", "proven"]
    return cols


def tokens_per_s_per_user(tpot_ms: float) -> float:
    """Decode speed one request sees: one token per decode step, 1000 / TPOT (ms)."""
    return 1000.0 / tpot_ms


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


# Requirements monotone in the pruning vector: a configuration whose bounds are no better
# than a point missing only these misses them too (TTFT no lower, makespan, hence
# throughput, no better on the same GPUs).
MONOTONE_REQUIREMENTS = {"ttft", "throughput"}


def _prunes(ev) -> bool:
    """May this point cut off configurations it dominates? Only if every configuration it
    dominates is off the front too: it meets every requirement, or misses only monotone ones
    (a point missing, say, TPOT must not hide a dominated configuration that meets it)."""
    return {c.name for c in ev.checks if not c.ok} <= MONOTONE_REQUIREMENTS


def _solve_one(inst: Instance, base: ModelData, config: StageCosts, settings: SolverSettings,
               budget: Budget, ttft_cap: int | None = None):
    """Smallest batch makespan of configuration ``config`` (memory and the TPOT requirement
    enforced, TTFT and throughput requirements not), with TTFT <= ``ttft_cap``; then the
    smallest TTFT at that makespan, within ``budget``. Returns (proven, plan) or (False,
    None) when nothing fits. TPOT is enforced because it is no objective: a split slower in
    batch time and TTFT may meet a TPOT limit the fastest split misses, and only
    requirement-meeting rows are on the front."""
    limits = {k: v for k, v in base.limits_ns.items() if k == "tpot"}
    if ttft_cap is not None:
        limits["ttft"] = ttft_cap
    data = replace(base, cfgs=(config,), limits_ns=limits)
    with building(budget):
        dm = build_model(data, relax=("throughput",))
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
                 budget: Budget | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One row per computed deployment of ``inst`` on ``num_gpus`` GPUs, with the ``pareto``
    column marking the front; rows sorted by ``SORT_KEY``. Everything stays within
    ``budget`` (default: the settings' time limit from now); configurations it leaves no
    time for are counted in ``attrs["unsolved"]``. NoSolutionError (exit 4) when the
    time runs out before the candidates are even costed. ``on_progress(done, total)`` is
    called after each candidate configuration (solved, skipped as dominated, or unsolved)."""
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
    for done, (bound_vector, c) in enumerate(candidates, 1):
        if on_progress is not None:
            on_progress(done - 1, len(candidates))
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
            if _prunes(ev):
                found.append((ev.makespan_ns, ev.ttft_ns, hot_units, ev.communication_ns))
            rows.append(_row(plan, ev, proven and proven_placement[plan.deg.ep]))
    if on_progress is not None:
        on_progress(len(candidates), len(candidates))
    if unsolved:
        log.info("pareto on %d GPUs: the time limit of %g s left %d configuration(s) unsolved",
                    gpus, settings.time_limit_s, unsolved)
    table = finish_table(pd.DataFrame(rows) if rows else pd.DataFrame(columns=COLUMNS))
    table.attrs["unsolved"] = unsolved
    return table


def _row(plan, ev, proven: bool) -> dict:
    d, m = plan.deg, ev.metrics()
    row = {"num_gpus": d.num_gpus, **{k: getattr(d, k) for k in DEGREES}, **{k: m[k] for k in METRICS}}
    if "tpot_ms" in m:
        row.update(tpot_ms=m["tpot_ms"], tokens_per_s_per_user=tokens_per_s_per_user(m["tpot_ms"]))
    missed = [c.name for c in ev.checks if not c.ok]
    row.update(feasible=ev.feasible, misses=" ".join(missed) or MEETS_ALL, proven=proven)
    return row


def objective_columns(df: pd.DataFrame, objectives: dict[str, str]) -> list[str]:
    """What makes two rows duplicates: the objectives, the decode figures when present, and
    ``feasible``."""
    return [*objectives, *[c for c in DECODE_COLUMNS if c in df], "feasible"]


def finish_table(df: pd.DataFrame, objectives: dict[str, str] | None = None) -> pd.DataFrame:
    """Sort (``SORT_KEY``, then the degrees), drop duplicate rows (equal in every objective:
    the first is kept), and mark the front: rows meeting every requirement that no other such
    row dominates."""
    objectives = objectives or OBJECTIVES
    if df.empty:
        return pd.DataFrame(columns=table_columns(df))
    df = df.sort_values(SORT_KEY + DEGREES, kind="stable")
    df = df.drop_duplicates(subset=objective_columns(df, objectives), keep="first").copy()
    feasible = df["feasible"].astype(bool)
    df["pareto"] = False
    if feasible.any():
        df.loc[feasible, "pareto"] = non_dominated(df[feasible], objectives)
    return df.reset_index(drop=True)[table_columns(df)]
