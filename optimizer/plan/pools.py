"""Disaggregated plans: a prefill pool and a decode pool in one plan file (docs/plan-file.md,
"Disaggregated plans"), read with the ONE plan reader per pool, and the rank layout that puts
the pools' replicas on the cluster's GPUs.

A disaggregated plan is ``{"mode": "disagg", "num_gpus": total, "pools": [pool, pool], ...}``.
Each pool is a plan-like object of ONE replica (``degrees``, ``serving``, ``stages``,
``expert_placement``, ``gpus`` with ranks ``0..g-1``, ``metrics``) plus ``role`` ("prefill"
or "decode"), ``replicas`` (identical copies) and ``num_gpus`` (g, per replica). The pool's
replica is read exactly as a service plan is (``plan.files.read_plan``), so every command
that reads plans reads a pool's replica the same way.

Layout (``replica_first_ranks``): every replica's GPU count divides the GPUs per node or is a
multiple of it; replicas are laid out in decreasing size, prefill before decode at equal
size, each from the next free global rank. With sizes of that kind (and GPUs per node a
power of two, as on every preset) no replica smaller than a node straddles two nodes, and
every replica of a node or more starts on a node boundary.

KV transfer link (``transfer_link``): "intra_node" when the whole deployment fits on one node
(every prefill replica shares a node with every decode replica), else "inter_node" (the
router may pair any prefill replica with any decode replica, so the slower link is priced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.errors import InputError
from optimizer.inputs.files import validation_message
from optimizer.inputs.schema import Instance
from optimizer.plan.files import SCHEMA_VERSION, PlanData, PlanFile, read_plan
from optimizer.plan.rules import MAX_PLAN_GPUS
from optimizer.plan.service import knobs_from_file

ROLES = ("prefill", "decode")
MODES = ("agg", "disagg")
INTRA_NODE, INTER_NODE = "intra_node", "inter_node"
# the keys of a pool that are not the replica's plan fields
POOL_KEYS = ("role", "replicas", "num_gpus")


@dataclass(frozen=True)
class Pool:
    """One pool as read: its role, replica count, the replica's plan and knobs."""

    role: str
    replicas: int
    plan: PlanData           # ONE replica, ranks 0..g-1
    knobs: ServingKnobs | None
    file: PlanFile           # the replica's plan file (head fields copied from the plan)
    doc: dict                # the pool object as written

    @property
    def gpus_per_replica(self) -> int:
        return self.plan.deg.num_gpus

    @property
    def num_gpus(self) -> int:
        return self.replicas * self.gpus_per_replica


def is_disagg(doc: object) -> bool:
    """True for a document that holds pools (``mode`` "disagg" or a ``pools`` key)."""
    return isinstance(doc, dict) and (doc.get("mode") == "disagg" or "pools" in doc)


def replica_doc(doc: dict, pool: dict) -> dict:
    """The plan document of one replica of ``pool``: the plan's head (schema_version,
    instance, status), the pool's ``num_gpus`` and its plan fields."""
    head = {k: doc[k] for k in ("schema_version", "instance", "status") if k in doc}
    return {**head, **{k: v for k, v in pool.items() if k not in ("role", "replicas")}}


def _pool_what(source: str, index: int) -> str:
    return f"plan {source}: pools[{index}]"


def _replicas(pool: dict, what: str) -> int:
    n = pool.get("replicas")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_PLAN_GPUS:
        raise InputError(f"{what}.replicas={n!r}: must be an integer 1..{MAX_PLAN_GPUS}")
    return n


def _role(pool: dict, what: str) -> str:
    role = pool.get("role")
    if role not in ROLES:
        shown = role if isinstance(role, (str, int, float, type(None))) else type(role).__name__
        raise InputError(f"{what}.role={str(shown)[:60]!r}: must be 'prefill' or 'decode'")
    return role


def read_pools(doc: object, inst: Instance | None = None, source: str = "(in memory)",
               cap_gpus: bool = True) -> list[Pool]:
    """The pools of a disaggregated plan, prefill first; InputError (exit 2, one line naming
    ``pools[i].field``) on the first problem: not exactly one pool per role, a replica count
    outside 1..65536, a replica that breaks a plan-file rule (docs/plan-file.md), a replica
    size that neither divides nor is a multiple of the GPUs per node, or a ``num_gpus`` other
    than the sum of replicas x GPUs per replica."""
    if not isinstance(doc, dict):
        raise InputError(f"plan {source}: the top level must be a JSON object")
    pools = doc.get("pools")
    if not isinstance(pools, list) or len(pools) != len(ROLES):
        raise InputError(f"plan {source}: pools: must be a list of {len(ROLES)} objects "
                         "(one 'prefill' pool and one 'decode' pool)")
    out: dict[str, Pool] = {}
    for index, pool in enumerate(pools):
        what = _pool_what(source, index)
        if not isinstance(pool, dict):
            raise InputError(f"{what}: must be a JSON object")
        role, replicas = _role(pool, what), _replicas(pool, what)
        if role in out:
            raise InputError(f"{what}.role={role!r}: a second {role} pool (one pool per role)")
        try:
            f = PlanFile.model_validate(replica_doc(doc, pool))
        except ValidationError as exc:
            raise InputError(validation_message(what, exc)) from None
        data, problems = read_plan(f, inst, f"{source}: pools[{index}]", cap_gpus=cap_gpus)
        if data is None:
            raise InputError(problems[0].message)
        gpn = data.gpus_per_node
        g = data.deg.num_gpus
        if gpn % g and g % gpn:
            raise InputError(f"{what}.num_gpus={g}: a replica's GPUs must divide the {gpn} GPUs "
                             f"per node or be a multiple of them")
        out[role] = Pool(role, replicas, data, knobs_from_file(f), f, pool)
    total = sum(p.num_gpus for p in out.values())
    stated = doc.get("num_gpus")
    if stated is not None and stated != total:
        raise InputError(f"plan {source}: num_gpus={str(stated)[:40]}: the pools use {total} GPUs "
                         "(replicas x num_gpus summed)")
    if inst is not None and total > inst.hardware.num_gpus:
        raise InputError(f"plan {source}: pools use {total} GPUs, hardware.num_gpus="
                         f"{inst.hardware.num_gpus}")
    return [out[role] for role in ROLES]


def replica_first_ranks(sizes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    """Global first rank of every replica: ``sizes`` maps a role to (replicas, GPUs per
    replica); replicas are laid out in decreasing size, prefill before decode at equal size
    (module doc)."""
    order = sorted(((-g, ROLES.index(role), role) for role, (_, g) in sizes.items()))
    out: dict[str, tuple[int, ...]] = {}
    rank = 0
    for neg_g, _, role in order:
        replicas, g = sizes[role][0], -neg_g
        out[role] = tuple(rank + r * g for r in range(replicas))
        rank += replicas * g
    return {role: out[role] for role in ROLES if role in out}


def transfer_link(total_gpus: int, gpus_per_node: int) -> str:
    """The link a KV cache crosses from a prefill replica to a decode replica (module doc)."""
    return INTRA_NODE if total_gpus <= gpus_per_node else INTER_NODE


def pools_plan_head(instance: str, status: str, total_gpus: int) -> dict[str, Any]:
    """The keys a disaggregated plan file opens with, in the contract's order."""
    return {"schema_version": SCHEMA_VERSION, "instance": instance, "status": status,
            "mode": "disagg", "num_gpus": total_gpus}
