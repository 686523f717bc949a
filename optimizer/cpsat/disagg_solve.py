"""Solve a disaggregated service: the pool candidates (plain Python,
``costs.serving.disagg_search``), CP-SAT's choice of one prefill and one decode candidate
with their replica counts (``disagg_model``), and the plan evaluated from its pools alone
(``plan.pools.evaluate_disagg``, what ``moeopt check`` reruns).

Expert placement per EP degree is the one of least hot load per layer (as in
``service_solve``); stages are the even split; each replica is laid out by Megatron's order
from its first rank (docs/plan-file.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from optimizer.costs.layout import megatron_layout
from optimizer.costs.serving.disagg_search import PoolSearch, pool_candidates, replica_sizes
from optimizer.costs.serving.metrics import ServiceLoad, Slo
from optimizer.costs.serving.replica import even_stages, service_degrees, service_load
from optimizer.costs.units import rate_target_to_int
from optimizer.cpsat.budget import MIN_SOLVE_S
from optimizer.cpsat.disagg_model import DISAGG_OBJECTIVES, DisaggChoice, DisaggModel
from optimizer.cpsat.service_solve import placements
from optimizer.errors import InfeasibleError, InputError, NoSolutionError
from optimizer.inputs.schema import Instance, ServiceWorkload
from optimizer.plan.evaluate import Plan
from optimizer.plan.pools import DisaggEvaluation, PoolPlan, evaluate_disagg
from optimizer.plan.service import service_slo


@dataclass
class DisaggResult:
    """The chosen deployment, evaluated from its pools, and how it was chosen."""

    status: str  # "optimal" | "feasible"
    evaluation: DisaggEvaluation
    choice: DisaggChoice
    objective: str
    searched: PoolSearch
    wall_s: dict[str, float] = field(default_factory=dict)  # candidates, model, plan, total


def check_disagg_instance(inst: Instance) -> None:
    """InputError (exit 2, one line) when the instance cannot be planned disaggregated."""
    if not isinstance(inst.workload, ServiceWorkload):
        raise InputError("workload.kind='batch': --mode disagg plans services (workload.kind "
                         "'service'); a static batch has no prefill/decode pools")
    if inst.requirements.max_e2e_latency_s is not None:
        raise InputError(f"requirements.max_e2e_latency_s={inst.requirements.max_e2e_latency_s:g}: "
                         "--mode disagg enforces TTFT and TPOT per pool, not an end-to-end limit; "
                         "use --mode agg")


@dataclass(frozen=True)
class DisaggInputs:
    """What every disaggregated solve of one instance shares."""

    load: ServiceLoad
    slo: Slo
    loads: tuple
    ranks_by_ep: dict


def disagg_inputs(inst: Instance, max_gpus: int, trace=None) -> DisaggInputs:
    sizes = replica_sizes(inst.hardware.gpus_per_node, max_gpus)
    eps = {d.ep for g in sizes for d in service_degrees(inst, g)}
    loads, ranks = placements(inst, sorted(eps))
    return DisaggInputs(service_load(inst.workload, trace), service_slo(inst), loads, ranks)


def pool_plan(inst: Instance, cand, role: str, replicas: int, ranks_by_ep: dict) -> PoolPlan:
    """The replica plan of a candidate: even stages, least-hot placement, Megatron's layout."""
    deg = cand.deg
    placement = {l: tuple(tuple(sorted(r)) for r in ranks_by_ep[deg.ep][i])
                 for i, l in enumerate(inst.model.moe_layer_ids)}
    plan = Plan(inst.name, deg, even_stages(inst.model.num_layers, deg.pp), placement,
                megatron_layout(deg, inst.hardware.gpus_per_node))
    return PoolPlan(role, plan, cand.knobs, replicas)


def solve_disagg(inst: Instance, num_gpus: int | None = None, objective: str | None = None,
                 time_limit_s: float | None = None, workers: int | None = None, seed: int | None = None,
                 trace=None) -> DisaggResult:
    """Best disaggregated deployment on at most ``num_gpus`` GPUs (default the hardware's):
    InfeasibleError (exit 3) when no pair serves the instance's rate within the SLOs."""
    check_disagg_instance(inst)
    objective = objective or "goodput"
    if objective not in DISAGG_OBJECTIVES:
        raise InputError(f"--objective={objective}: a service is planned for "
                         f"{' or '.join(DISAGG_OBJECTIVES)}")
    start = time.perf_counter()
    limit = time_limit_s if time_limit_s is not None else inst.search.time_limit_s
    budget = num_gpus or inst.hardware.num_gpus
    shared = disagg_inputs(inst, budget, trace)
    rate, target = inst.workload.arrival_rate_rps, inst.requirements.min_goodput_rps
    target_score = None if target is None else rate_target_to_int(target)
    found = pool_candidates(inst, budget, shared.load, shared.slo, rate, shared.loads, shared.ranks_by_ep,
                            goodput_first=objective == "goodput", min_goodput_score=target_score)
    searched_s = time.perf_counter() - start
    if not found.prefill or not found.decode:
        raise _no_pools(found, budget)
    model = DisaggModel(found.prefill, found.decode, budget, inst.hardware.gpus_per_node, target_score)
    other = next(o for o in DISAGG_OBJECTIVES if o != objective)
    choice = model.solve([(objective, "max"), (other, "max"), ("gpus", "min")],
                         max(MIN_SOLVE_S, limit - (time.perf_counter() - start)),
                         workers or inst.search.workers, inst.search.seed if seed is None else seed)
    model_s = time.perf_counter() - start - searched_s
    if choice is None and model.last_status != "infeasible":
        message = (f"time limit: CP-SAT found no pair of pools in {limit:g} s ({model.last_status}); "
                   "raise --time-limit")
        raise NoSolutionError(message, {"status": "unknown", "explanation": message, "conflicts": [],
                                        "bounds": {}})
    if choice is None:
        raise _infeasible(inst, found, rate, target)
    ev = evaluate_disagg(inst, shared.load,
                         pool_plan(inst, found.prefill[choice.prefill], "prefill", choice.prefill_replicas,
                                   shared.ranks_by_ep),
                         pool_plan(inst, found.decode[choice.decode], "decode", choice.decode_replicas,
                                   shared.ranks_by_ep))
    total = time.perf_counter() - start
    wall = {"candidates": searched_s, "model": model_s, "plan": total - searched_s - model_s, "total": total}
    return DisaggResult("optimal" if choice.proven else "feasible", ev, choice, objective, found, wall)


def _no_pools(found: PoolSearch, budget: int) -> InfeasibleError:
    missing = "prefill" if not found.prefill else "decode"
    message = (f"infeasible: no {missing} replica fits on at most {budget} GPUs beside a replica of "
               f"the other pool (weights, buffers and the KV of one request per GPU)")
    return InfeasibleError(message, {"status": "infeasible", "explanation": message,
                                     "conflicts": ["memory"], "bounds": {"num_gpus": budget}})


def _infeasible(inst: Instance, found: PoolSearch, rate: float | None, target: float | None) -> InfeasibleError:
    """Why no pair qualifies: the best per-GPU goodput of each pool against what is asked."""
    best_p = max(found.prefill, key=lambda c: c.goodput_rps / c.gpus)
    best_d = max(found.decode, key=lambda c: c.goodput_rps / c.gpus)
    wants = [f"workload.arrival_rate_rps={rate:g}"] if rate is not None else []
    wants += [f"requirements.min_goodput_rps={target:g}"] if target is not None else []
    message = (f"infeasible: {' and '.join(wants) or 'the SLOs'} cannot be served disaggregated "
               f"on {inst.hardware.num_gpus} GPUs: the best prefill replica serves "
               f"{best_p.goodput_rps / best_p.gpus:.4g} requests/s per GPU within TTFT, the best decode "
               f"replica {best_d.goodput_rps / best_d.gpus:.4g} within TPOT")
    return InfeasibleError(message, {"status": "infeasible", "explanation": message, "conflicts": ["goodput"],
                                     "bounds": {"prefill_goodput_rps_per_gpu": best_p.goodput_rps / best_p.gpus,
                                                "decode_goodput_rps_per_gpu": best_d.goodput_rps / best_d.gpus}})


def solver_dict(result: DisaggResult) -> dict:
    """The solver block of a disaggregated plan."""
    first = result.choice.phases[0]
    scale, unit = (1e6, "requests/s") if first.name == "goodput" else (1e3, "output tokens/s")
    return {"status": result.status, "objective_name": result.objective,
            "objective_description": f"{result.objective} of the deployment (the lesser pool's), then "
                                     f"{'throughput' if result.objective == 'goodput' else 'goodput'}, "
                                     "then the fewest GPUs",
            "objective": first.value / scale, "bound": first.bound / scale, "gap": first.gap,
            "objective_unit": unit,
            "phases": [{"name": p.name, "sense": p.sense, "status": p.status, "score": p.value,
                        "score_bound": p.bound} for p in result.choice.phases],
            "wall_s": round(result.wall_s["total"], 3),
            "wall_split_s": {k: round(v, 3) for k, v in result.wall_s.items() if k != "total"},
            "prefill_candidates": len(result.searched.prefill),
            "decode_candidates": len(result.searched.decode),
            "candidates_evaluated": result.searched.evaluated,
            "decode_configurations_pruned": result.searched.pruned,
            "prefill_classes_skipped": result.searched.prefill_skipped,
            "configurations": result.searched.configurations}
