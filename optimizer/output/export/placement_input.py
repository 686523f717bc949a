"""A ``moeopt place`` result (its JSON) as a plan document, so that ``export`` takes it.

``place`` decides which experts (and replicas) each of ``num_ranks`` EP ranks holds per MoE
layer; it says nothing about attention or pipelining. The plan it stands for is the usual
wide-EP serving layout: one stage (PP1), attention data-parallel over the EP ranks (TP1 x
DP = EP, one replica per GPU), experts whole (ETP1, EDP1), ``num_ranks`` GPUs packed onto
nodes in rank order. The model (layers, which of them are MoE) comes from the instance.

Layer keys: ``place`` numbers the layers of an instance's synthetic loads 0..L_moe-1 (rows of
the MoE layers) and those of a load file by the file's own row (hidden-layer index). A result
whose layers are the instance's MoE layer ids is taken as is; one numbered 0..L_moe-1 is
mapped onto the MoE layers in order; anything else is an input error.
"""

from __future__ import annotations

from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.errors import InputError
from optimizer.inputs.schema import Instance


def is_placement(doc: object) -> bool:
    """True for a ``moeopt place`` result (it has ``num_ranks`` and ``layers``, no ``degrees``)."""
    return isinstance(doc, dict) and "num_ranks" in doc and "layers" in doc and "degrees" not in doc


def plan_doc_from_placement(doc: dict, inst: Instance, name: str) -> dict:
    """The plan document of placement ``doc`` on ``inst`` (see the module docstring)."""
    try:
        ep = int(doc["num_ranks"])
        redundant = int(doc.get("redundant", 0))
        rows = {int(entry["layer"]): [list(map(int, r)) for r in entry["ranks"]]
                for entry in doc["layers"]}
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"placement: not a moeopt place result ({type(err).__name__}: {err})") from None
    m = inst.model
    if int(doc.get("num_experts", m.num_experts)) != m.num_experts:
        raise InputError(f"placement: num_experts={doc.get('num_experts')} but instance {inst.name} "
                         f"has model.num_experts={m.num_experts}")
    moe_ids = list(m.moe_layer_ids)
    if sorted(rows) == moe_ids:
        keyed = rows
    elif sorted(rows) == list(range(len(moe_ids))):
        keyed = {moe_ids[i]: ranks for i, ranks in rows.items()}
    else:
        raise InputError(f"placement: layers {sorted(rows)[:6]}... are neither the instance's MoE "
                         f"layers {moe_ids[:6]}... nor 0..{len(moe_ids) - 1}")
    gpn = inst.hardware.gpus_per_node
    deg = Degrees(1, 1, ep, ep, 1, 1, 1)
    gpus = [{"rank": s.rank, "node": s.node, "local_rank": s.local_rank, "stage": s.stage,
             "tp_rank": s.tp_rank, "dp_rank": s.dp_rank, "ep_rank": s.ep_rank,
             "etp_rank": s.etp_rank, "edp_rank": s.edp_rank} for s in megatron_layout(deg, gpn)]
    return {"schema_version": 1, "instance": name, "status": doc.get("status", "feasible"),
            "num_gpus": ep, "degrees": {"tp": 1, "pp": 1, "dp": ep, "ep": ep, "etp": 1, "edp": 1},
            "micro_batches": 1, "num_experts": m.num_experts, "redundant_experts": redundant,
            "stages": [{"stage": 0, "layers": list(range(m.num_layers))}],
            "expert_placement": {str(layer): ranks for layer, ranks in sorted(keyed.items())},
            "gpus": gpus}
