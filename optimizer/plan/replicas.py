"""Redundant expert slots (replicas) in a plan: the weights they add to a GPU, and the plan's
evaluation with them (``moeopt check``; the exports' memory fractions use the same bytes).

The cost model counts ``E // EP`` experts per EP rank and MoE layer (``costs/tables.py``); a
rank of a plan with ``R`` redundant slots holds ``(E + R) / EP`` of them, each split ETP ways.
The load rule needs nothing here: ``costs.timing.hot_load`` already gives a replicated expert's
load in equal shares to its replicas (the dispatch rule of ``optimizer/place`` and of the
runtimes' EPLB), so the evaluator's hot-rank loads hold for replicated plans as they are.
"""

from __future__ import annotations

import math
from dataclasses import replace

from optimizer.costs.formulas import expert_bytes
from optimizer.inputs.schema import Instance, ModelSpec
from optimizer.plan.evaluate import Evaluation, Plan, requirement_checks


def replica_weight_bytes(m: ModelSpec, ep: int, etp: int, slots_per_rank: int,
                         moe_layers: int) -> float:
    """Bytes the replicas add to ONE GPU of a stage holding ``moe_layers`` MoE layers:
    ``max(slots_per_rank - E // ep, 0) x moe_layers x bytes per expert / etp``."""
    extra = slots_per_rank - m.num_experts // ep
    return max(extra, 0) * moe_layers * expert_bytes(m) / etp


def slots_per_rank(plan: Plan) -> int:
    """Expert slots of one EP rank per MoE layer (the same in every layer, plan rule 3)."""
    return max((len(ranks[0]) for ranks in plan.placement.values()), default=0)


def with_replica_weights(inst: Instance, plan: Plan, ev: Evaluation) -> Evaluation:
    """``ev`` with every stage's weights raised by its replicas' bytes (rounded up to a whole
    byte: never fewer than the GPU holds) and the requirement checks redone on that memory;
    ``ev`` itself when the plan has no replicas."""
    per_rank = slots_per_rank(plan)
    d = plan.deg
    extra = [math.ceil(replica_weight_bytes(inst.model, d.ep, d.etp, per_rank,
                                            sum(1 for layer in layers if layer in plan.placement)))
             for layers in plan.stages]
    if not any(extra):
        return ev
    out = replace(ev, stage_memory=[replace(m, weights=m.weights + x)
                                    for m, x in zip(ev.stage_memory, extra)])
    out.checks = requirement_checks(inst, out)
    return out
