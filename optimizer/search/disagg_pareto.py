"""``moeopt pareto --mode disagg|auto`` on a service: the disaggregated throughput-interactivity
front, output tokens/s per GPU (max) against tokens/s per user (max), by epsilon-constraint
over the decode pool's TPOT, and the two modes' fronts in one table.

Levels. The decode TPOT at the SLO percentile is bounded in turn by each level eps (ms),
``levels`` of them evenly spaced in tokens/s per user (1000 / eps) from the loosest useful
bound (the SLO's ``max_tpot_ms``, or without one the slowest step any decode candidate can
take, step(B): no TPOT exceeds it) up to, excluded, the fastest lone decode step (no TPOT is
below it: a decode pool there serves nothing).

One point per level: the same decode candidates and CP-SAT model as ``moeopt solve --mode
disagg`` (``cpsat.disagg_model``), with the TPOT SLO replaced by eps, maximizing goodput per
GPU on at most the budget's GPUs (``cpsat.disagg_front``, exact and linear), then the fewest
GPUs. Each point is the deployment at its goodput rate under the level (TTFT and eps at the
percentile, the instance's arrival rate and ``min_goodput_rps`` served): its output tokens/s
per GPU is proven the highest of any deployment whose TPOT meets the level, or its gap is
given. Its tokens/s per user and TPOT are the decode pool's at that rate (at most eps).

Pruning for the front (what keeps each level exact; tests/search/test_disagg_front.py checks
it against enumerating every prefill configuration, decode configuration and replica count):
- prefill candidates are the solve's (``pool_candidates``): a prefill replica's figures do not
  depend on the TPOT bound, and dominance among the same GPUs and transfer class on goodput,
  capacity and fewest replicas is safe for any goodput objective;
- decode candidates are re-evaluated at every level from EVERY decode configuration (size,
  degrees, knobs of ``decode_knobs``): the solve's goodput bound is not applied (it prunes by
  the SLO's goodput, which says nothing of a tighter TPOT), and dominance (the same GPUs per
  replica; no lower goodput, capacity and no more replicas at the rate, all AT THAT LEVEL) is
  applied per level: the dominating candidate fits the same pairs and GPUs and serves at
  least as much, so some optimum of the level survives;
- ``decode_knobs`` keeps only the largest running cap B per micro-batch count: a smaller B
  has the same TPOT at every rate and a stricter slot and stability limit, so at any level
  its goodput and fewest replicas are no better.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from optimizer.costs.layout import Degrees
from optimizer.costs.serving.disagg import DecodeCandidate, decode_knobs, decode_queue, evaluate_decode
from optimizer.costs.serving.disagg_search import (
    PoolSearch,
    _replica,
    _undominated_decode,
    pool_candidates,
    replica_sizes,
)
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import Replica, ServiceLoad, Slo
from optimizer.costs.serving.replica import even_stages, replica_memory, service_degrees
from optimizer.costs.units import rate_target_to_int
from optimizer.cpsat.budget import MIN_SOLVE_S, Budget
from optimizer.cpsat.disagg_front import PerGpuChoice, best_goodput_per_gpu
from optimizer.cpsat.disagg_model import DisaggModel
from optimizer.cpsat.disagg_solve import check_disagg_instance, disagg_inputs, pool_plan
from optimizer.inputs.schema import Instance
from optimizer.plan.pools import DisaggEvaluation, evaluate_disagg

DEFAULT_LEVELS = 8


@dataclass(frozen=True)
class DecodeConfig:
    """One decode replica configuration: degrees, knobs and the replica's step model."""

    deg: Degrees
    knobs: ServingKnobs
    replica: Replica


@dataclass(frozen=True)
class LevelPoint:
    """The optimum of one TPOT level: the choice, its candidates and the plan evaluated at it."""

    tpot_bound_ms: float
    choice: PerGpuChoice
    evaluation: DisaggEvaluation  # at the deployment's goodput rate under the level


@dataclass
class DisaggFront:
    """Every level's optimum (None: no deployment meets the level), and the levels the time
    limit left unsolved."""

    levels_ms: list[float]
    points: list[LevelPoint | None]
    unsolved: int = 0


def decode_configurations(inst: Instance, budget: int, load: ServiceLoad, loads, ranks_by_ep) -> list[DecodeConfig]:
    """Every decode replica configuration of a pool beside at least one prefill GPU, as
    ``pool_candidates`` enumerates them (sizes, degrees, knobs)."""
    out = []
    for g in replica_sizes(inst.hardware.gpus_per_node, budget):
        for deg in service_degrees(inst, g):
            mem = replica_memory(inst, deg, even_stages(inst.model.num_layers, deg.pp), load)
            knobs = decode_knobs(mem, deg.pp, inst.search.max_micro_batches)
            if knobs:
                rep, _ = _replica(inst, deg, load, loads, ranks_by_ep)
                out += [DecodeConfig(deg, k, rep) for k in knobs]
    return out


def tpot_range_ms(configs: list[DecodeConfig], load: ServiceLoad, max_tpot_ms: float | None) -> tuple[float, float]:
    """(loosest, fastest) TPOT bounds, ms: the SLO's (or without one the slowest step any
    decode candidate takes, step(B): no TPOT exceeds it) and the fastest lone decode step (no
    TPOT is below it: a decode pool bounded there serves nothing)."""
    steps = [decode_queue(c.replica, c.knobs, load).step_ns for c in configs]
    fastest = min(step(1) for step in steps) / 1e6
    slowest = max(step(c.knobs.max_running_requests) for step, c in zip(steps, configs)) / 1e6
    return (slowest if max_tpot_ms is None else min(max_tpot_ms, slowest)), fastest


def tpot_levels_ms(loosest: float, tightest: float, count: int, include_tightest: bool) -> list[float]:
    """``count`` TPOT bounds (ms) from ``loosest`` on, evenly spaced in tokens/s per user up to
    ``tightest`` (included or not), rounded to ns."""
    if count <= 1 or loosest <= tightest:
        return [loosest]
    low, high = 1000.0 / loosest, 1000.0 / tightest
    parts = count - 1 if include_tightest else count
    return [loosest] + [round(1000.0 / (low + k * (high - low) / parts), 6) for k in range(1, count)]


def level_decode(configs: list[DecodeConfig], load: ServiceLoad, slo: Slo, rate_rps: float | None) -> list[DecodeCandidate]:
    """The decode candidates at the level ``slo.max_tpot_ms``: every configuration, then dominance."""
    return _undominated_decode([evaluate_decode(c.deg, c.knobs, c.replica, load, slo, rate_rps) for c in configs])


def level_slo(slo: Slo, tpot_ms: float) -> Slo:
    return Slo(slo.max_ttft_s, tpot_ms, slo.max_e2e_latency_s, slo.percentile)


def _at_level(inst: Instance, tpot_ms: float) -> Instance:
    """The instance whose TPOT SLO is the level and whose operating rate is the goodput (no
    arrival rate): ``evaluate_disagg`` of it gives the point's figures."""
    req = inst.requirements.model_copy(update={"max_tpot_ms": tpot_ms})
    workload = inst.workload.model_copy(update={"arrival_rate_rps": None, "concurrency": None})
    return inst.model_copy(update={"requirements": req, "workload": workload})


@dataclass
class _Levels:
    """What every level of one front shares, and the decode candidates per level (cached)."""

    inst: Instance
    shared: object  # cpsat.disagg_solve.DisaggInputs
    found: PoolSearch
    configs: list[DecodeConfig]
    target_score: int | None
    decode: dict

    def candidates(self, eps: float) -> list[DecodeCandidate]:
        if eps not in self.decode:
            self.decode[eps] = level_decode(self.configs, self.shared.load, level_slo(self.shared.slo, eps),
                                            self.inst.workload.arrival_rate_rps)
        return self.decode[eps]

    def model(self, eps: float) -> DisaggModel | None:
        decode = self.candidates(eps)
        if not self.found.prefill or not decode:
            return None
        return DisaggModel(self.found.prefill, decode, self.inst.hardware.num_gpus,
                           self.inst.hardware.gpus_per_node, self.target_score)

    def feasible(self, eps: float, seconds: float) -> bool:
        """Some deployment meets every requirement with TPOT within ``eps`` (a time-out: no)."""
        model = self.model(eps)
        return model is not None and model.solve([("goodput", "max")], seconds) is not None


_BISECTIONS = 7


def tightest_feasible_ms(levels: _Levels, loosest: float, fastest: float, clock: Budget) -> float:
    """The tightest TPOT bound (within 1 / 2^7 of the tokens/s per user range) at which some
    deployment meets every requirement (feasibility only tightens with the bound; a check
    CP-SAT leaves undecided in its share of the time counts as infeasible: conservative)."""
    low, high = 1000.0 / loosest, 1000.0 / fastest  # low feasible, high serves nothing
    for _ in range(_BISECTIONS):
        mid = (low + high) / 2
        if levels.feasible(round(1000.0 / mid, 6), max(MIN_SOLVE_S, clock.left() / 8)):
            low = mid
        else:
            high = mid
    return round(1000.0 / low, 6)


def disagg_front(inst: Instance, trace=None, levels: int = DEFAULT_LEVELS, time_limit_s: float | None = None,
                 workers: int | None = None, seed: int | None = None,
                 levels_ms: list[float] | None = None) -> DisaggFront:
    """The optimum of every TPOT level on at most ``hardware.num_gpus`` GPUs (module doc).
    ``levels_ms`` replaces the evenly spaced levels. The candidates and every level's decode
    evaluation run in full (as in ``solve --mode disagg``); the CP-SAT solves share what is
    left of the time limit (default ``search.time_limit_s``), at least ``MIN_SOLVE_S`` each;
    levels where CP-SAT found no deployment in time are counted in ``unsolved``."""
    check_disagg_instance(inst)
    budget_gpus = inst.hardware.num_gpus
    clock = Budget(inst.search.time_limit_s if time_limit_s is None else time_limit_s)
    shared = disagg_inputs(inst, budget_gpus, trace)
    target = inst.requirements.min_goodput_rps
    found = pool_candidates(inst, budget_gpus, shared.load, shared.slo, inst.workload.arrival_rate_rps,
                            shared.loads, shared.ranks_by_ep)
    configs = decode_configurations(inst, budget_gpus, shared.load, shared.loads, shared.ranks_by_ep)
    cache = _Levels(inst, shared, found, configs, None if target is None else rate_target_to_int(target), {})
    workers = workers or inst.search.workers
    seed = inst.search.seed if seed is None else seed
    if levels_ms is None:
        levels_ms = _levels(cache, levels, clock)
    front = DisaggFront(list(levels_ms), [])
    for k, eps in enumerate(levels_ms):
        model = cache.model(eps)
        choice = None if model is None else best_goodput_per_gpu(
            model, max(MIN_SOLVE_S, clock.left() / (len(levels_ms) - k)), workers, seed)
        if choice is None and model is not None and model.last_status == "unknown":
            front.unsolved += 1
        if choice is None or choice.goodput_score <= 0:
            front.points.append(None)
            continue
        ev = evaluate_disagg(_at_level(inst, eps), shared.load,
                             pool_plan(inst, found.prefill[choice.prefill], "prefill", choice.prefill_replicas,
                                       shared.ranks_by_ep),
                             pool_plan(inst, cache.candidates(eps)[choice.decode], "decode",
                                       choice.decode_replicas, shared.ranks_by_ep))
        front.points.append(LevelPoint(eps, choice, ev))
    return front


def _levels(cache: _Levels, count: int, clock: Budget) -> list[float]:
    """The levels (module doc): up to the tightest feasible bound when the instance asks for a
    rate or a goodput (found by bisection), else up to the fastest step, excluded."""
    if not cache.configs:
        return []
    loosest, fastest = tpot_range_ms(cache.configs, cache.shared.load, cache.shared.slo.max_tpot_ms)
    wants_rate = cache.inst.workload.arrival_rate_rps is not None or cache.target_score is not None
    if count <= 1 or loosest <= fastest:
        return [loosest]
    if not wants_rate:
        return tpot_levels_ms(loosest, fastest, count, include_tightest=False)
    if not cache.feasible(loosest, max(MIN_SOLVE_S, clock.left() / 8)):
        return [loosest]
    return tpot_levels_ms(loosest, tightest_feasible_ms(cache, loosest, fastest, clock), count,
                          include_tightest=True)


def _role_text(pools, field) -> str:
    return " | ".join(f"{q.role} {field(q)}" for q in pools)


COLUMNS = ["mode", "num_gpus", "pools", "tp", "pp", "dp", "ep", "etp", "max_running_requests",
           "prefill_chunk_tokens", "prefill_micro_batches", "decode_micro_batches",
           "output_tokens_per_s_per_gpu", "tokens_per_s_per_user", "goodput_rps", "goodput_rps_per_gpu",
           "ttft_p90_s", "tpot_ms", "tpot_bound_ms", "status", "gap", "feasible", "pareto"]


def point_row(point: LevelPoint) -> dict:
    """One row of the table (``COLUMNS``) for a level's optimum."""
    ev = point.evaluation
    pools = (ev.prefill, ev.decode)
    m = ev.metrics()
    row = {"mode": "disagg", "num_gpus": ev.num_gpus,
           "pools": " + ".join(f"{q.replicas}x{q.gpus_per_replica} {q.role}" for q in pools)}
    for name in ("tp", "pp", "dp", "ep", "etp"):
        row[name] = _role_text(pools, lambda q, n=name: getattr(q.plan.deg, n))
    for name in ("max_running_requests", "prefill_chunk_tokens", "prefill_micro_batches", "decode_micro_batches"):
        row[name] = _role_text(pools, lambda q, n=name: getattr(q.knobs, n))
    row.update({"output_tokens_per_s_per_gpu": m["output_tokens_per_s_per_gpu"],
                "tokens_per_s_per_user": m["tokens_per_s_per_user"], "goodput_rps": m["rate_rps"],
                "goodput_rps_per_gpu": m["rate_rps"] / ev.num_gpus, "ttft_p90_s": m["ttft_p90_s"],
                "tpot_ms": ev.decode_at.tpot_mean_ms, "tpot_bound_ms": point.tpot_bound_ms,
                "status": "optimal" if point.choice.proven else "feasible", "gap": point.choice.gap,
                "feasible": True, "pareto": True})
    return row


def agg_rows(table: pd.DataFrame, meets: list[bool], max_tpot_ms: float | None) -> list[dict]:
    """The aggregated front's rows (``service_pareto.COLUMNS``) in ``COLUMNS``: the points are
    enumerated exhaustively, each at its goodput rate under the SLO."""
    rows = []
    for r, ok in zip(table.to_dict("records"), meets):
        row = dict(r)
        row.update({"mode": "agg", "pools": f"1x{int(r['num_gpus'])}", "tpot_bound_ms": max_tpot_ms,
                    "status": "enumerated", "gap": 0.0, "feasible": bool(ok), "pareto": bool(ok)})
        rows.append(row)
    return rows


def mark_front(rows: list[dict]) -> None:
    """``pareto`` True exactly on the rows meeting every requirement that no such row beats
    in both output tokens/s per GPU and tokens/s per user (equal points: the first kept)."""
    ok = [r for r in rows if r["feasible"]]
    seen = set()
    for r in rows:
        x, y = r["output_tokens_per_s_per_gpu"], r["tokens_per_s_per_user"]
        beaten = any(o["output_tokens_per_s_per_gpu"] >= x and o["tokens_per_s_per_user"] >= y
                     and (o["output_tokens_per_s_per_gpu"], o["tokens_per_s_per_user"]) != (x, y) for o in ok)
        r["pareto"] = bool(r["feasible"] and x > 0 and not beaten and (x, y) not in seen)
        if r["pareto"]:
            seen.add((x, y))


def disagg_table(front: DisaggFront) -> pd.DataFrame:
    """The disaggregated front: the levels' optima no other beats, by decreasing output
    tokens/s per GPU (equal points: the tighter level's)."""
    rows = [point_row(p) for p in sorted((p for p in front.points if p is not None), key=lambda p: p.tpot_bound_ms)]
    mark_front(rows)
    rows = [r for r in rows if r["pareto"]]
    return _frame(rows)


def auto_table(agg: pd.DataFrame, agg_meets: list[bool], front: DisaggFront, max_tpot_ms: float | None) -> pd.DataFrame:
    """Both modes' fronts in one table, ``pareto`` marking the combined front."""
    rows = agg_rows(agg, agg_meets, max_tpot_ms) + disagg_table(front).to_dict("records")
    mark_front(rows)
    return _frame(rows)


def _frame(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    if len(table):
        table = table.sort_values("output_tokens_per_s_per_gpu", ascending=False, kind="stable")
    return table.reset_index(drop=True)

