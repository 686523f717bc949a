"""Redundant experts for a solved static-batch plan (``solve --redundant-experts``,
``search.redundant_experts``): the CP-SAT model places each expert once; the replicas are
placed afterwards by the placement engine (``optimizer.place``) on the plan's EP degree, for
the instance's expert loads, and the plan is re-evaluated (``optimizer.plan.evaluate``).

Memory: the cost model counts ``E // EP`` experts per EP rank; the re-evaluation adds the
replicas' weights (``plan.replicas.with_replica_weights``, what ``moeopt check`` and the
exports count), and a plan the replicas push over a requirement is refused (exit 3) rather
than written. Time: a replicated expert's load is split evenly over its replicas
(``costs.timing.hot_load``).
"""

from __future__ import annotations

import dataclasses

from optimizer.errors import InfeasibleError, InputError


def with_replicas(inst, plan, redundant: int, time_limit_s: float, workers: int, seed: int):
    """``plan`` with ``redundant`` replicas per MoE layer placed over its EP ranks, and its
    evaluation. InputError when ``E + redundant`` does not split evenly over the EP ranks."""
    import numpy as np

    from optimizer.costs.expert_loads import expert_loads
    from optimizer.place.problem import PlaceSpec, Settings
    from optimizer.place.run import place
    from optimizer.plan.evaluate import evaluate
    from optimizer.plan.replicas import with_replica_weights

    ep, experts = plan.deg.ep, inst.model.num_experts
    if ep == 1:
        raise InputError(f"--redundant-experts={redundant}: the plan has EP1 (every GPU holds every "
                         "expert); replicas need expert parallelism")
    if (experts + redundant) % ep:
        raise InputError(f"--redundant-experts={redundant}: experts + redundant = {experts + redundant} "
                         f"is not divisible by the plan's EP{ep}")
    moe_ids = list(inst.model.moe_layer_ids)
    counts = np.array(expert_loads(inst), dtype=np.int64)
    result = place(counts, moe_ids, PlaceSpec(ep, redundant), Settings(time_limit_s, workers, seed))
    placement = {lp.layer: tuple(tuple(sorted(r)) for r in lp.ranks) for lp in result.layers}
    replicated = dataclasses.replace(plan, placement=placement)
    ev = with_replica_weights(inst, replicated, evaluate(inst, replicated))
    missed = [c for c in ev.checks if not c.ok]
    if missed:
        c = missed[0]
        raise InfeasibleError(
            f"--redundant-experts={redundant}: with the replicas' weights the plan misses {c.name} "
            f"({c.value:.4g} {c.unit}, limit {c.limit:.4g}); use fewer replicas or more GPUs",
            {"status": "infeasible", "conflicts": [c.name]})
    return replicated, ev, result
