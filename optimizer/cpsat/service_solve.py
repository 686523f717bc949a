"""Solve a service instance: the candidates of every configuration and knob tuple (plain
Python, ``costs.serving.search``), then CP-SAT's lexicographic choice among them
(``service_model``), and the plan with its per-replica knobs and service metrics.

The expert placement of each EP degree is the one of least hot load per layer
(``pruning.exact_hot_loads``): a layer's MoE time only grows with its hot load, so that
placement is best for every step composition. Stages are Megatron's even split.

The search (``widest_search``, the default) evaluates one knob tuple per knob group and is
exact, for two reasons:
- within a knob group (tuples differing only in the cap B) the widest tuple has the highest
  goodput and the highest sustainable rate (B only caps the running requests), so it is the
  only tuple of its group that can be chosen (ties aside, which it wins or equals);
- meeting every SLO is monotone in the rate, so a group's goodput reaches the incumbent's
  goodput g exactly when its widest tuple meets the SLOs at g: ONE prediction rules a group
  out, instead of a goodput search (for the throughput objective: a steady state at the
  incumbent's sustainable rate).
A candidate is feasible when its goodput reaches the instance's rate and ``min_goodput_rps``
(the SLOs then hold at the rate); the incumbent starts there, so infeasible groups cost one
prediction too. ``exhaustive=True`` evaluates every tuple of every group not bounded out
(``costs.serving.search.search``, the former search; kept to check the fast one against).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.layout import megatron_layout
from optimizer.costs.serving.candidates import ServiceCandidate, evaluate_group
from optimizer.costs.serving.metrics import ServiceLoad, Slo, goodput_rps, meets_at, predict
from optimizer.costs.serving.replica import even_stages, service_degrees, service_load
from optimizer.costs.serving.search import ServiceSearch, prepared_groups, search
from optimizer.costs.units import rate_target_to_int
from optimizer.cpsat.budget import MIN_SOLVE_S, Budget
from optimizer.cpsat.pruning import exact_hot_loads
from optimizer.cpsat.service_model import SERVICE_OBJECTIVES, ServiceChoice, ServiceModel
from optimizer.errors import InfeasibleError, InputError, NoSolutionError
from optimizer.inputs.schema import Instance, ServiceWorkload
from optimizer.plan.evaluate import Plan
from optimizer.plan.service import service_slo

log = logging.getLogger(__name__)
# Another candidate seen in the search is worth a line when it beats the chosen one by this.
NOTABLE_GAIN = 1.10


@dataclass
class ServiceResult:
    """The chosen plan, its candidate (knobs and figures) and how it was chosen."""

    status: str  # "optimal" | "feasible"
    plan: Plan
    chosen: ServiceCandidate
    choice: ServiceChoice
    objective: str
    load: ServiceLoad
    slo: Slo
    searched: ServiceSearch
    wall_s: float
    notes: list[str] = field(default_factory=list)


def placements(inst: Instance, eps: list[int]) -> tuple[tuple, dict[int, list]]:
    """(expert loads, per EP degree the ranks of least hot load of each MoE layer)."""
    loads = expert_loads(inst)
    exact = exact_hot_loads(loads, sorted(eps))
    return loads, {ep: [h.ranks for h in rows] for ep, rows in exact.items()}


def solve_service(inst: Instance, num_gpus: int | None = None, objective: str | None = None,
                  time_limit_s: float | None = None, workers: int | None = None, seed: int | None = None,
                  trace=None, exhaustive: bool = False) -> ServiceResult:
    """Best (configuration, knobs) of a service; InfeasibleError (exit 3) when no candidate
    meets the SLOs at the instance's rate and the goodput requirement, NoSolutionError when
    the time limit cut the search before any candidate qualified."""
    if not isinstance(inst.workload, ServiceWorkload):
        raise InputError("workload.kind: solve_service plans services (kind 'service')")
    objective = objective or "goodput"
    if objective not in SERVICE_OBJECTIVES:
        raise InputError(f"--objective={objective}: a service is planned for "
                         f"{' or '.join(SERVICE_OBJECTIVES)} (lost-time is the static batch's)")
    start = time.perf_counter()
    limit = time_limit_s if time_limit_s is not None else inst.search.time_limit_s
    budget = Budget(limit)
    reserve_s = min(1.0, 0.1 * limit)  # kept for the CP-SAT choice among the candidates
    gpus = num_gpus or inst.hardware.num_gpus
    degrees = service_degrees(inst, gpus)
    if not degrees:
        raise InputError(f"hardware.num_gpus={gpus}: no admissible (tp, pp, dp, ep) tuple")
    load, slo = service_load(inst.workload, trace), service_slo(inst)
    rate = inst.workload.arrival_rate_rps
    target = inst.requirements.min_goodput_rps
    loads, ranks = placements(inst, list({d.ep for d in degrees}))
    out_of_time = lambda: budget.left() < reserve_s  # noqa: E731
    if exhaustive:
        found = search(inst, gpus, load, slo, rate, loads, ranks, objective, degrees=degrees,
                       min_goodput_rps=target, out_of_time=out_of_time)
    else:
        found = widest_search(inst, gpus, load, slo, rate, target, loads, ranks, degrees, objective, out_of_time)
    log.info("service search: %d candidates of %d configurations, %d groups skipped by bounds",
             len(found.candidates), found.configurations, found.pruned)
    model = ServiceModel(found.candidates, None if target is None else rate_target_to_int(target))
    choice = model.solve(objective, max(MIN_SOLVE_S, budget.left()),
                         workers or inst.search.workers, inst.search.seed if seed is None else seed)
    if choice is None and found.unvisited:
        raise _out_of_time(found, limit)
    if choice is None:
        examined = _add_best_missed(found, load, slo, rate, lambda: budget.left() <= 0.0)
        raise _infeasible(inst, found, rate, target, examined)
    chosen = found.candidates[choice.index]
    deg = chosen.deg
    moe_ids = inst.model.moe_layer_ids
    placement = {l: tuple(tuple(sorted(r)) for r in ranks[deg.ep][i]) for i, l in enumerate(moe_ids)}
    plan = Plan(inst.name, deg, even_stages(inst.model.num_layers, deg.pp), placement,
                megatron_layout(deg, inst.hardware.gpus_per_node))
    proven = choice.proven and found.unvisited == 0
    result = ServiceResult("optimal" if proven else "feasible", plan, chosen, choice, objective,
                           load, slo, found, time.perf_counter() - start)
    result.notes = notable_alternatives(found.candidates, chosen, target)
    if choice.phases[0].status == "unknown":
        result.notes.append("CP-SAT had no time left to choose among the candidates: the best one "
                            "was taken by enumeration (raise --time-limit for CP-SAT's proof)")
    if found.unvisited:
        result.notes.append(f"the time limit ({limit:g} s) ran out in the service search: "
                            f"{found.unvisited} knob groups not evaluated, so the plan is not proven "
                            "optimal (raise --time-limit)")
    return result


def widest_search(inst: Instance, gpus: int, load: ServiceLoad, slo: Slo, rate: float | None,
                  target: float | None, loads: tuple, ranks: dict, degrees: list, objective: str,
                  out_of_time) -> ServiceSearch:
    """The widest tuple of each knob group that can still beat the incumbent (module doc);
    once ``out_of_time()`` is true (checked before each group after the first) the rest are
    counted in ``unvisited``."""
    floor_rps = max(rate or 0.0, target or 0.0)
    groups, without = prepared_groups(inst, gpus, load, loads, ranks, degrees)
    found = ServiceSearch(without_knobs=without)
    best_good, best_cap, seen = floor_rps, 0.0, set()
    for visited, (deg, group, rep) in enumerate(groups):
        if visited and out_of_time():
            found.unvisited = len(groups) - visited
            break
        widest = max(group, key=lambda k: k.max_running_requests)
        if floor_rps > 0 and not meets_at(rep, widest, load, floor_rps, slo):
            found.pruned += 1
            found.missed.append((deg, widest, rep))
            continue  # infeasible: misses the SLOs at the rate it must serve
        if objective == "goodput":
            promising = best_good <= floor_rps or meets_at(rep, widest, load, best_good, slo)
        else:
            promising = best_cap == 0.0 or predict(rep, widest, load, best_cap).stable
        if not promising:
            found.pruned += 1
            continue
        cand = evaluate_group(deg, [widest], rep, load, slo, rate)[0]
        seen.add(deg)
        found.candidates.append(cand)
        if cand.goodput_rps >= floor_rps:
            best_good, best_cap = max(best_good, cand.goodput_rps), max(best_cap, cand.sustainable_rps)
    found.configurations = len(seen)
    return found


def _add_best_missed(found: ServiceSearch, load: ServiceLoad, slo: Slo, rate: float | None,
                     out_of_time) -> tuple[int, int]:
    """When ``found`` has no candidate, add the best of the groups the fast search skipped for
    missing the SLOs at the rate to serve (their goodput, each group's widest tuple:
    ``evaluate_group``'s rule), so an infeasibility names the best goodput a configuration
    reaches, not a memory limit. Groups in the search's order (the most prefill capacity
    first) until ``out_of_time()`` (after the first); (examined, skipped) groups."""
    if found.candidates or not found.missed:
        return 0, 0
    best, best_good, examined = None, -1.0, 0
    for deg, widest, rep in found.missed:
        if examined and out_of_time():
            break
        examined += 1
        good = goodput_rps(rep, widest, load, slo)
        if good > best_good:
            best, best_good = (deg, widest, rep), good
    found.candidates.append(evaluate_group(best[0], [best[1]], best[2], load, slo, rate)[0])
    return examined, len(found.missed)


def _out_of_time(found: ServiceSearch, limit_s: float) -> NoSolutionError:
    """No qualifying candidate among the groups visited, but some were not: not proven infeasible."""
    message = (f"time limit: the service search evaluated {len(found.candidates)} candidates in {limit_s:g} s, "
               f"none qualifying, and left {found.unvisited} knob groups unvisited; raise --time-limit")
    return NoSolutionError(message, {"status": "unknown", "explanation": message, "conflicts": [], "bounds": {}})


def _degrees_text(c: ServiceCandidate) -> str:
    d, k = c.deg, c.knobs
    return (f"tp={d.tp} pp={d.pp} dp={d.dp} ep={d.ep} etp={d.etp}, B={k.max_running_requests} "
            f"C={k.prefill_chunk_tokens} m_p={k.prefill_micro_batches} m_d={k.decode_micro_batches}")


def notable_alternatives(cands: list[ServiceCandidate], chosen: ServiceCandidate,
                         min_goodput_rps: float | None) -> list[str]:
    """One line per figure (throughput, goodput) when a feasible candidate seen in the
    search beats the chosen one by ``NOTABLE_GAIN`` or more."""
    ok = [c for c in cands if c.meets_rate is not False
          and (min_goodput_rps is None or c.goodput_rps >= min_goodput_rps)]
    lines = []
    for name, unit, value in (("throughput", "output tokens/s per GPU", lambda c: c.throughput_tokens_per_s_per_gpu),
                              ("goodput", "requests/s per GPU", lambda c: c.goodput_rps_per_gpu)):
        best = max(ok, key=value, default=None)
        if best is not None and value(best) >= NOTABLE_GAIN * value(chosen) > 0:
            lines.append(f"another plan has {value(best) / value(chosen) - 1:.0%} more {name} "
                         f"({value(best):.4g} vs {value(chosen):.4g} {unit}): {_degrees_text(best)}")
    return lines


def _infeasible(inst: Instance, found: ServiceSearch, rate: float | None, target: float | None,
                examined: tuple[int, int] = (0, 0)) -> InfeasibleError:
    """Why no candidate qualifies: the best goodput any has, against the rate and target
    (``examined``: of the groups that missed the SLOs at the rate, how many had their goodput
    searched, of how many, when the time ran out before all)."""
    best = max(found.candidates, key=lambda c: c.goodput_rps, default=None)
    req = inst.requirements
    slos = ", ".join(s for s in (f"TTFT <= {req.max_ttft_s:g} s" if req.max_ttft_s else "",
                                  f"TPOT <= {req.max_tpot_ms:g} ms" if req.max_tpot_ms else "",
                                  f"E2E <= {req.max_e2e_latency_s:g} s" if req.max_e2e_latency_s else "") if s)
    if best is None:
        message = "infeasible: no knob tuple of any configuration fits the memory (KV cache of one request)"
    else:
        wants = [f"workload.arrival_rate_rps={rate:g}"] if rate is not None else []
        wants += [f"requirements.min_goodput_rps={target:g}"] if target is not None else []
        message = (f"infeasible: {' and '.join(wants)} exceed(s) the best goodput of "
                   f"{best.goodput_rps:.4g} requests/s at p{req.percentile} {slos} "
                   f"({_degrees_text(best)})")
        if examined[0] < examined[1]:
            message += (f"; the best of {examined[0]} of the {examined[1]} knob groups that miss the SLOs "
                        "at that rate, examined within the time limit")
    payload = {"status": "infeasible", "explanation": message, "conflicts": ["goodput"],
               "bounds": {"best_goodput_rps": best.goodput_rps if best else 0.0}}
    return InfeasibleError(message, payload)
