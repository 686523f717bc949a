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

from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.serving.disagg import (
    INTER_NODE,
    INTRA_NODE,
    DecodeCandidate,
    PrefillCandidate,
    TransferClass,
    decode_queue,
    evaluate_decode,
    evaluate_prefill,
    kv_transfer_bytes,
    predict_prefill,
    prefill_load,
    prompt_kv_load,
    transfer_seconds,
)
from optimizer.costs.serving.disagg_decode import DecodeMetrics, predict_decode
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import ServiceLoad, ServiceMetrics
from optimizer.costs.serving.replica import replica, replica_memory
from optimizer.costs.tables import LinkFacts
from optimizer.costs.timing import hot_load
from optimizer.costs.units import bytes_to_gb, gb_to_bytes_floor, rate_target_to_int
from optimizer.errors import InputError
from optimizer.inputs.files import validation_message
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Check, Plan
from optimizer.plan.files import SCHEMA_VERSION, PlanData, PlanFile, plan_head, read_plan
from optimizer.plan.rules import MAX_PLAN_GPUS
from optimizer.plan.service import (
    KNOB_NAMES,
    knobs_from_file,
    runtime_pool_check,
    service_slo,
)

ROLES = ("prefill", "decode")
MODES = ("agg", "disagg")
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


# ----------------------------------------------------------------------------------------------
# Evaluation from the plan alone (the planner writes its plans through it, ``check`` reruns it)


@dataclass(frozen=True)
class PoolPlan:
    """What the evaluation needs of one pool: the replica's plan and knobs, the replicas."""

    role: str
    plan: Plan
    knobs: ServingKnobs
    replicas: int

    @property
    def gpus_per_replica(self) -> int:
        return self.plan.deg.num_gpus


@dataclass(frozen=True)
class DisaggEvaluation:
    """Both pools' per-replica figures, the transfer, and the metrics at the operating rate
    (the instance's arrival rate, else the deployment's goodput)."""

    prefill: PoolPlan
    decode: PoolPlan
    transfer: TransferClass
    kv_bytes_per_request: float
    transfer_s: float
    prefill_figures: PrefillCandidate  # per replica
    decode_figures: DecodeCandidate  # per replica
    rate_rps: float
    prefill_at: ServiceMetrics  # at rate / prefill replicas (TTFT without the transfer)
    decode_at: DecodeMetrics  # at rate / decode replicas
    memory_bytes: dict[str, int]  # role -> peak bytes of the most loaded GPU
    output_tokens: int
    percentile: int
    kv_pool_checks: tuple[Check, ...] = ()  # with hardware.kv_pool_runtime: each pool's KV pool

    @property
    def num_gpus(self) -> int:
        return sum(p.replicas * p.gpus_per_replica for p in (self.prefill, self.decode))

    @property
    def goodput_rps(self) -> float:
        return min(self.prefill.replicas * self.prefill_figures.goodput_rps,
                   self.decode.replicas * self.decode_figures.goodput_rps)

    @property
    def capacity_rps(self) -> float:
        return min(self.prefill.replicas * self.prefill_figures.capacity_rps,
                   self.decode.replicas * self.decode_figures.capacity_rps)

    def ttft_s(self, percentile: int) -> float:
        return self.prefill_at.ttft_at(percentile) + self.transfer_s

    def metrics(self) -> dict[str, float]:
        """The contract's service metrics of the deployment (plus extras)."""
        d, total = self.output_tokens, self.num_gpus
        tpot_p90 = self.decode_at.tpot_p90_ms
        return {
            "rate_rps": self.rate_rps,
            "ttft_p50_s": self.ttft_s(50), "ttft_p90_s": self.ttft_s(90), "ttft_p99_s": self.ttft_s(99),
            "tpot_p50_ms": self.decode_at.tpot_p50_ms, "tpot_p90_ms": tpot_p90,
            "e2e_latency_p90_s": self.ttft_s(90) + max(0, d - 1) * tpot_p90 / 1e3,
            "goodput_rps": self.goodput_rps,
            "goodput_rps_per_gpu": self.goodput_rps / total,
            "sustainable_rps": self.capacity_rps,
            "output_tokens_per_s_per_gpu": self.rate_rps * d / total,
            "max_output_tokens_per_s_per_gpu": self.capacity_rps * d / total,
            "tokens_per_s_per_user": 1000.0 / self.decode_at.tpot_mean_ms,
            "utilization": max(self.prefill_at.utilization, self.decode_at.utilization),
            "max_memory_gb": bytes_to_gb(max(self.memory_bytes.values())),
        }

    def pool_metrics(self, role: str) -> dict[str, float]:
        """One replica's figures at its share of the operating rate."""
        pool = self.prefill if role == "prefill" else self.decode
        figures = self.prefill_figures if role == "prefill" else self.decode_figures
        out = {"rate_rps": self.rate_rps / pool.replicas, "goodput_rps": figures.goodput_rps,
               "sustainable_rps": figures.capacity_rps}
        if role == "prefill":
            m = self.prefill_at
            out.update({"ttft_p50_s": m.ttft_p50_s, "ttft_p90_s": m.ttft_p90_s, "ttft_p99_s": m.ttft_p99_s,
                        "utilization": m.utilization})
        else:
            m = self.decode_at
            out.update({"tpot_p50_ms": m.tpot_p50_ms, "tpot_p90_ms": m.tpot_p90_ms,
                        "running_requests_per_queue": m.running, "utilization": m.utilization})
        out["max_memory_gb"] = bytes_to_gb(self.memory_bytes[role])
        return out

    def transfer_doc(self) -> dict[str, Any]:
        return {"link": self.transfer.link, "links": self.transfer.links,
                "kv_bytes_per_request": self.kv_bytes_per_request, "transfer_s": self.transfer_s}


def _replica_of(inst: Instance, plan: Plan, load: ServiceLoad):
    moe_ids = inst.model.moe_layer_ids
    hot = {l: hot_load(row, plan.placement[l]) for l, row in zip(moe_ids, expert_loads(inst))}
    return replica(inst, plan.deg, LinkFacts.of(plan.slots), plan.stages, hot, load)


def evaluate_disagg(inst: Instance, load: ServiceLoad, prefill: PoolPlan, decode: PoolPlan) -> DisaggEvaluation:
    """Every figure of a disaggregated deployment from its pools alone (module doc,
    docs/serving-model.md): the transfer from the layout, each pool's per-replica goodput and
    capacity, and the metrics at the operating rate."""
    slo, rate = service_slo(inst), inst.workload.arrival_rate_rps
    total = prefill.replicas * prefill.gpus_per_replica + decode.replicas * decode.gpus_per_replica
    cls = TransferClass(transfer_link(total, inst.hardware.gpus_per_node),
                        min(prefill.gpus_per_replica, decode.gpus_per_replica))
    num_bytes = kv_transfer_bytes(inst, load.prompt_tokens)
    seconds = transfer_seconds(inst, num_bytes, cls.links, cls.link)
    rep_p = _replica_of(inst, prefill.plan, prefill_load(load))
    pre = evaluate_prefill(prefill.plan.deg, prefill.knobs, rep_p, load, slo, rate, {cls: seconds})[0]
    rep_d = _replica_of(inst, decode.plan, load)
    dec = evaluate_decode(decode.plan.deg, decode.knobs, rep_d, load, slo, rate)
    goodput = min(prefill.replicas * pre.goodput_rps, decode.replicas * dec.goodput_rps)
    capacity = min(prefill.replicas * pre.capacity_rps, decode.replicas * dec.capacity_rps)
    operating = rate if rate is not None else (goodput if goodput > 0 else capacity * 1e-6)
    mem = {"prefill": replica_memory(inst, prefill.plan.deg, prefill.plan.stages, prompt_kv_load(load)),
           "decode": replica_memory(inst, decode.plan.deg, decode.plan.stages, load)}
    knobs = {"prefill": prefill.knobs, "decode": decode.knobs}
    memory = {role: m.peak_bytes(knobs[role].max_running_requests, knobs[role].prefill_chunk_tokens)
              for role, m in mem.items()}
    pool_checks = tuple(c for c in (runtime_pool_check(mem[role], knobs[role], f"{role}: ") for role in mem)
                        if c is not None)
    return DisaggEvaluation(prefill, decode, cls, num_bytes, seconds, pre, dec, operating,
                            predict_prefill(rep_p, prefill.knobs, load, operating / prefill.replicas),
                            predict_decode(decode_queue(rep_d, decode.knobs, load), operating / decode.replicas),
                            memory, load.output_tokens, slo.percentile, pool_checks)


def disagg_checks(inst: Instance, ev: DisaggEvaluation) -> list[Check]:
    """Memory of each pool, both pools stable and the SLOs at the instance's rate (a decode
    slot at the percentile included), the goodput target."""
    limit = gb_to_bytes_floor(inst.memory_limit_gb)
    checks = [Check(f"{role}: memory_per_gpu", bytes_to_gb(b), inst.memory_limit_gb, "GB", b <= limit)
              for role, b in ev.memory_bytes.items()]
    checks += list(ev.kv_pool_checks)
    req, p = inst.requirements, ev.percentile
    if inst.workload.arrival_rate_rps is not None:
        pre, dec = ev.prefill_at, ev.decode_at
        checks += [Check("prefill: stable_at_arrival_rate", pre.utilization, 1.0, "utilization", pre.stable),
                   Check("decode: stable_at_arrival_rate", dec.utilization, 1.0, "utilization", dec.stable),
                   Check(f"decode: slot_free_at_p{p}", dec.running, ev.decode.knobs.max_running_requests,
                         "running requests per queue (mean)", dec.stable and dec.admitted_at[p])]
        if req.max_ttft_s is not None:
            checks.append(Check(f"ttft_p{p}", ev.ttft_s(p), req.max_ttft_s, "s",
                                pre.stable and ev.ttft_s(p) <= req.max_ttft_s))
        if req.max_tpot_ms is not None:
            checks.append(Check(f"tpot_p{p}", dec.tpot_at(p), req.max_tpot_ms, "ms",
                                dec.stable and dec.tpot_at(p) <= req.max_tpot_ms))
    if req.min_goodput_rps is not None:
        score = min(ev.prefill.replicas * ev.prefill_figures.goodput_score,
                    ev.decode.replicas * ev.decode_figures.goodput_score)
        checks.append(Check("goodput", ev.goodput_rps, req.min_goodput_rps, "requests/s",
                            score >= rate_target_to_int(req.min_goodput_rps)))
    return checks


def _pool_doc(pool: PoolPlan, status: str, metrics: dict) -> dict:
    plan = pool.plan
    head = plan_head(plan, status)
    return {
        "role": pool.role, "replicas": pool.replicas, "num_gpus": plan.deg.num_gpus,
        "degrees": head["degrees"],
        "serving": {name: getattr(pool.knobs, name) for name in KNOB_NAMES},
        "stages": [{"stage": j, "layers": list(layers)} for j, layers in enumerate(plan.stages)],
        "expert_placement": {str(layer): [list(r) for r in ranks] for layer, ranks in sorted(plan.placement.items())},
        "gpus": [{"rank": s.rank, "node": s.node, "local_rank": s.local_rank, "stage": s.stage,
                  "tp_rank": s.tp_rank, "dp_rank": s.dp_rank, "ep_rank": s.ep_rank,
                  "etp_rank": s.etp_rank, "edp_rank": s.edp_rank} for s in plan.slots],
        "metrics": metrics,
    }


def disagg_plan_to_json(instance: str, ev: DisaggEvaluation, status: str, solver: dict) -> dict:
    """The plan file of a disaggregated deployment (docs/plan-file.md)."""
    return {
        **pools_plan_head(instance, status, ev.num_gpus),
        "pools": [_pool_doc(pool, status, ev.pool_metrics(pool.role)) for pool in (ev.prefill, ev.decode)],
        "transfer": ev.transfer_doc(),
        "metrics": ev.metrics(),
        "solver": solver,
    }
