"""Plan files: write the contract's JSON, read (possibly partial) plans back for checking.

A hand-written plan may leave out ``stages`` (even split, as the runtimes do),
``expert_placement`` (contiguous blocks per EP rank), ``gpus`` (Megatron's rank order),
``degrees.etp`` (Megatron's default: ETP = TP) and ``degrees.edp`` (implied by folding).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from optimizer.plan.evaluate import Check, Evaluation, Plan
from optimizer.costs.layout import Degrees, GpuSlot, megatron_layout, trivial_ranks
from optimizer.inputs.schema import Instance
from optimizer.costs.units import bytes_to_gb

SCHEMA_VERSION = 1
Pos = Annotated[int, Field(gt=0, le=1 << 20)]
Idx = Annotated[int, Field(ge=0, le=1 << 20)]


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class DegreesIn(_Loose):
    tp: Pos = 1
    pp: Pos = 1
    dp: Pos = 1
    ep: Pos = 1
    etp: Pos | None = None
    edp: Pos | None = None


class StageIn(_Loose):
    stage: Idx
    layers: list[Idx]


class GpuIn(_Loose):
    rank: Idx
    node: Idx
    stage: Idx
    tp_rank: Idx
    dp_rank: Idx
    ep_rank: Idx
    local_rank: Idx | None = None
    etp_rank: Idx | None = None
    edp_rank: Idx | None = None


class PlanFile(_Loose):
    """What ``moeopt check`` reads; extra keys (metrics, claims) are kept, not trusted."""

    instance: str | None = None
    num_gpus: Pos | None = None
    degrees: DegreesIn
    micro_batches: Pos = 1
    stages: list[StageIn] | None = None
    expert_placement: dict[str, list[list[Idx]]] | None = None
    gpus: list[GpuIn] | None = None


def even_stages(num_layers: int, pp: int) -> tuple[tuple[int, ...], ...]:
    """Contiguous split with the first ``num_layers % pp`` stages one layer longer."""
    base, extra = divmod(num_layers, pp)
    out, start = [], 0
    for j in range(pp):
        size = base + (1 if j < extra else 0)
        out.append(tuple(range(start, start + size)))
        start += size
    return tuple(out)


def plan_from_file(inst: Instance, f: PlanFile) -> tuple[Plan | None, list[Check]]:
    """A Plan plus structural checks; the Plan is None when the structure is broken."""
    d, m = f.degrees, inst.model
    per_stage = d.tp * d.dp
    etp = d.etp or d.tp  # Megatron-Core: expert_tensor_parallel_size defaults to TP
    edp = d.edp or (per_stage // (etp * d.ep) if per_stage % (etp * d.ep) == 0 else 0)
    deg = Degrees(d.tp, d.pp, d.dp, d.ep, etp, edp, f.micro_batches)
    checks = _degree_checks(inst, f, deg)
    if deg.num_gpus > inst.hardware.num_gpus or deg.pp > m.num_layers:
        return None, checks  # nothing sensible to lay out (and far too many ranks to try)
    stages = (tuple(tuple(s.layers) for s in sorted(f.stages, key=lambda s: s.stage))
              if f.stages is not None else even_stages(m.num_layers, d.pp))
    flat = [layer for s in stages for layer in s]
    checks.append(_rule("stages_contiguous_all_layers_once", flat == list(range(m.num_layers))
                        and len(stages) == d.pp and all(stages)))
    placement = _placement(inst, f, deg)
    checks.append(_rule("expert_placement_each_expert_once_equal_slots", placement is not None))
    slots = _slots(inst, f, deg)
    checks.append(_rule("gpus_match_degrees", slots is not None))
    if not all(c.ok for c in checks):
        return None, checks
    return Plan(f.instance or inst.name, deg, stages, placement, slots), checks


def _rule(name: str, ok: bool) -> Check:
    return Check(name, 1.0 if ok else 0.0, 1.0, "rule", ok)


def _degree_checks(inst: Instance, f: PlanFile, deg: Degrees) -> list[Check]:
    m, hw = inst.model, inst.hardware
    n = f.num_gpus or deg.num_gpus
    kv_ok = m.num_kv_heads % deg.tp == 0 or deg.tp % m.num_kv_heads == 0
    return [
        _rule("tp*pp*dp == num_gpus", deg.num_gpus == n),
        _rule("etp*ep*edp == tp*dp (parallel folding)", deg.etp * deg.ep * deg.edp == deg.gpus_per_stage),
        _rule("num_gpus <= hardware.num_gpus", max(n, deg.num_gpus) <= hw.num_gpus),
        _rule("pp <= layers", deg.pp <= m.num_layers),
        _rule("tp divides the attention and KV heads", m.num_attention_heads % deg.tp == 0 and kv_ok),
        _rule("tp within a node", deg.tp <= hw.gpus_per_node and hw.gpus_per_node % deg.tp == 0),
        _rule("ep divides the experts", m.num_experts % deg.ep == 0),
        _rule("etp divides tp and the expert FFN", deg.tp % deg.etp == 0 and m.expert_ffn_size % deg.etp == 0),
        _rule("dp <= batch sequences", deg.dp <= inst.workload.batch_sequences),
        _rule("micro_batches <= sequences per replica",
              deg.micro_batches <= -(-inst.workload.batch_sequences // deg.dp)),
    ]


def _placement(inst: Instance, f: PlanFile, deg: Degrees):
    """MoE layer -> [rank] expert ids, or None when some MoE layer is not a valid placement
    (every expert exactly once, every rank the same number of experts)."""
    m = inst.model
    if m.num_experts % deg.ep:
        return None
    moe_ids = m.moe_layer_ids
    if f.expert_placement is None:
        ranks = tuple(tuple(r) for r in trivial_ranks(m.num_experts, deg.ep))
        return {layer: ranks for layer in moe_ids}
    if set(f.expert_placement) != {str(layer) for layer in moe_ids}:
        return None
    out = {}
    for layer in moe_ids:
        ranks = f.expert_placement[str(layer)]
        if len(ranks) != deg.ep or len({len(r) for r in ranks}) != 1:
            return None
        if sorted(x for r in ranks for x in r) != list(range(m.num_experts)):
            return None
        out[layer] = tuple(tuple(sorted(r)) for r in ranks)
    return out


def _slots(inst: Instance, f: PlanFile, deg: Degrees) -> tuple[GpuSlot, ...] | None:
    """The plan's layout, or Megatron's when absent; None when it contradicts the degrees
    or puts more GPUs on a node than it has (each node's local ranks distinct, < per node)."""
    gpn = inst.hardware.gpus_per_node
    if f.gpus is None:
        return megatron_layout(deg, gpn) if deg.edp > 0 else None
    default = {s.rank: s for s in megatron_layout(deg, gpn)} if deg.edp > 0 else {}
    slots = []
    for g in f.gpus:
        base = default.get(g.rank)
        etp_rank = g.etp_rank if g.etp_rank is not None else (base.etp_rank if base else 0)
        edp_rank = g.edp_rank if g.edp_rank is not None else (base.edp_rank if base else 0)
        slots.append(GpuSlot(g.rank, g.node, g.local_rank if g.local_rank is not None else g.rank % gpn,
                             g.stage, g.tp_rank, g.dp_rank, g.ep_rank, etp_rank, edp_rank))
    per_node: dict[int, list[int]] = {}
    for s in slots:
        per_node.setdefault(s.node, []).append(s.local_rank)
    fits = all(len(v) <= gpn and len(set(v)) == len(v) and max(v) < gpn for v in per_node.values())
    ok = (fits and sorted(s.rank for s in slots) == list(range(deg.num_gpus))
          and all(s.stage < deg.pp and s.tp_rank < deg.tp and s.dp_rank < deg.dp
                  and s.ep_rank < deg.ep and s.etp_rank < deg.etp and s.edp_rank < deg.edp for s in slots)
          and len({(s.stage, s.tp_rank, s.dp_rank) for s in slots}) == deg.num_gpus
          and len({(s.stage, s.etp_rank, s.ep_rank, s.edp_rank) for s in slots}) == deg.num_gpus)
    return tuple(sorted(slots, key=lambda s: s.rank)) if ok else None


def plan_to_json(plan: Plan, ev: Evaluation, status: str, solver: dict) -> dict:
    """The plan file of the interface contract (plus a few documented extra keys)."""
    d = plan.deg
    gpus = []
    for s in plan.slots:
        mem = ev.stage_memory[s.stage]
        gpus.append({"rank": s.rank, "node": s.node, "local_rank": s.local_rank, "stage": s.stage,
                     "tp_rank": s.tp_rank, "dp_rank": s.dp_rank, "ep_rank": s.ep_rank,
                     "etp_rank": s.etp_rank, "edp_rank": s.edp_rank,
                     "memory_gb": {"weights": bytes_to_gb(mem.weights),
                                   "kv_cache": bytes_to_gb(mem.kv_cache),
                                   "activations": bytes_to_gb(mem.activations),
                                   "buffers": bytes_to_gb(mem.buffers),
                                   "total": bytes_to_gb(mem.total)}})
    return {
        "schema_version": SCHEMA_VERSION,
        "instance": plan.instance,
        "status": status,
        "num_gpus": d.num_gpus,
        "degrees": {"tp": d.tp, "pp": d.pp, "dp": d.dp, "ep": d.ep, "etp": d.etp, "edp": d.edp},
        "micro_batches": d.micro_batches,
        "sequences_per_micro_batch": ev.costs.seqs_per_micro_batch,
        "stages": [{"stage": j, "layers": list(layers)} for j, layers in enumerate(plan.stages)],
        "expert_placement": {str(layer): [list(r) for r in ranks]
                             for layer, ranks in sorted(plan.placement.items())},
        "gpus": gpus,
        "metrics": ev.metrics(),
        "solver": solver,
    }
