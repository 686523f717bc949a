"""The aggregated side of ``moeopt solve --mode auto``: the same optimum as ``service_solve``
(one CP-SAT choice among service candidates), with fewer candidates evaluated.

Two facts make it exact:
- within a knob group (tuples differing only in the cap B) the widest tuple has the highest
  goodput and the highest sustainable rate (B only caps the running requests), so it is the
  only tuple of its group that can be chosen (ties aside, which it wins or equals);
- meeting every SLO is monotone in the rate, so a group's goodput reaches the incumbent's
  goodput g exactly when its widest tuple meets the SLOs at g: ONE prediction rules a group
  out, instead of a goodput search (for the throughput objective: a steady state at the
  incumbent's sustainable rate).
A candidate is feasible when its goodput reaches the instance's rate and ``min_goodput_rps``
(the SLOs then hold at the rate); the incumbent starts there, so infeasible groups cost one
prediction too.
"""

from __future__ import annotations

import time

from optimizer.costs.serving.candidates import evaluate_group
from optimizer.costs.serving.metrics import meets, predict
from optimizer.costs.serving.replica import service_degrees, service_load
from optimizer.costs.serving.search import ServiceSearch, prepared_groups
from optimizer.costs.units import rate_target_to_int
from optimizer.cpsat.budget import MIN_SOLVE_S
from optimizer.cpsat.service_model import ServiceModel
from optimizer.cpsat.service_solve import ServiceResult, _infeasible, placements
from optimizer.errors import InputError
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Plan
from optimizer.plan.service import service_slo


def solve_agg_for_auto(inst: Instance, num_gpus: int | None, objective: str | None, time_limit_s: float,
                       workers: int | None, seed: int | None, trace=None) -> ServiceResult:
    """The aggregated optimum (module doc); InfeasibleError as ``service_solve``."""
    from optimizer.costs.layout import megatron_layout
    from optimizer.costs.serving.replica import even_stages
    start = time.perf_counter()
    deadline = time.monotonic() + time_limit_s
    objective = objective or "goodput"
    gpus = num_gpus or inst.hardware.num_gpus
    degrees = service_degrees(inst, gpus)
    if not degrees:
        raise InputError(f"hardware.num_gpus={gpus}: no admissible (tp, pp, dp, ep) tuple")
    load, slo = service_load(inst.workload, trace), service_slo(inst)
    rate, target = inst.workload.arrival_rate_rps, inst.requirements.min_goodput_rps
    floor_rps = max(rate or 0.0, target or 0.0)
    loads, ranks = placements(inst, sorted({d.ep for d in degrees}))
    groups, without = prepared_groups(inst, gpus, load, loads, ranks, degrees)
    found = ServiceSearch(without_knobs=without)
    best_good, best_cap, seen = floor_rps, 0.0, set()
    for visited, (deg, group, rep) in enumerate(groups):
        if visited and time.monotonic() > deadline - min(1.0, 0.1 * time_limit_s):
            found.unvisited = len(groups) - visited
            break
        widest = max(group, key=lambda k: k.max_running_requests)
        if floor_rps > 0 and not meets(predict(rep, widest, load, floor_rps), slo, load):
            found.pruned += 1
            continue  # infeasible: misses the SLOs at the rate it must serve
        if objective == "goodput":
            promising = best_good <= floor_rps or meets(predict(rep, widest, load, best_good), slo, load)
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
    model = ServiceModel(found.candidates, None if target is None else rate_target_to_int(target))
    choice = model.solve(objective, max(MIN_SOLVE_S, deadline - time.monotonic()),
                         workers or inst.search.workers, inst.search.seed if seed is None else seed)
    if choice is None:
        raise _infeasible(inst, found, rate, target)
    chosen = found.candidates[choice.index]
    deg = chosen.deg
    placement = {l: tuple(tuple(sorted(r)) for r in ranks[deg.ep][i]) for i, l in enumerate(inst.model.moe_layer_ids)}
    plan = Plan(inst.name, deg, even_stages(inst.model.num_layers, deg.pp), placement,
                megatron_layout(deg, inst.hardware.gpus_per_node))
    proven = choice.proven and found.unvisited == 0
    return ServiceResult("optimal" if proven else "feasible", plan, chosen, choice, objective, load, slo, found,
                         time.perf_counter() - start)
