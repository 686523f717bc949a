"""Plan files: the fields (``PlanFile``), the ONE reader (``read_plan``, ``load_plan``) every
command uses, and the writer (``plan_to_json``). The rules live in ``optimizer.plan.rules``.

``read_plan`` turns a validated ``PlanFile`` into a ``PlanData`` with every optional field
filled by ONE rule (docs/plan-file.md), with or without an instance:

* ``degrees.etp`` absent: 1 (whole experts per GPU); ``degrees.edp`` absent: ``tp*dp/(etp*ep)``.
* ``stages`` absent: the even split (first stages one layer longer); present: stage numbers
  exactly ``0..pp-1``, layers contiguous, each layer once.
* ``expert_placement`` absent: contiguous blocks per EP rank; present: one entry per MoE layer.
* ``gpus`` absent: Megatron's rank order; a GPU's absent ``local_rank`` is ``rank % per node``,
  absent ``etp_rank``/``edp_rank`` are Megatron's.
* ``dense_layers`` (no instance): layers without MoE; with an instance its ``moe_layers`` rule.

Every inconsistency is a ``Problem`` (the check rule it breaks and a one-line reason): ``check``
shows them as violated rules (exit 3), ``export`` and ``report`` stop on the first (exit 2).
"""

from __future__ import annotations

import math
import os
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from optimizer.costs.layout import Degrees
from optimizer.costs.units import bytes_to_gb
from optimizer.errors import InputError
from optimizer.inputs.files import read_json, validation_message
from optimizer.inputs.names import Label, ResultName
from optimizer.inputs.schema import Instance, MoeTokenExchange
from optimizer.plan import rules
from optimizer.plan.evaluate import Check, Evaluation, Plan
from optimizer.plan.rules import (
    DEFAULT_GPUS_PER_NODE,
    MAX_PLAN_CELLS,
    MAX_PLAN_GPUS,
    RULE_FOLDING,
    RULE_GPUS,
    RULE_LAYOUT,
    RULE_PLACEMENT,
    RULE_STAGES,
    ExpertMap,
    PlanData,
    Problem,
    even_stages,
    printable,
)

__all__ = ["DEFAULT_GPUS_PER_NODE", "MAX_PLAN_CELLS", "MAX_PLAN_GPUS", "ExpertMap", "PlanData",
           "PlanFile", "Problem", "check_structure", "even_stages", "load_plan", "plan_data",
           "plan_from_doc", "plan_from_file", "plan_to_json", "printable", "read_plan", "record_exchange"]

SCHEMA_VERSION = 1
STATUSES = ("optimal", "feasible", "infeasible", "unknown")
Pos = Annotated[int, Field(gt=0, le=1 << 20)]
Idx = Annotated[int, Field(ge=0, le=1 << 20)]
GB = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


def _finite_metric(value: object) -> object:
    """A metric must be a JSON number a float holds (or null / a boolean / text of a Label)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            ok = math.isfinite(float(value))
        except OverflowError:
            ok = False
        if not ok:
            raise ValueError("a metric must be a finite number a float can hold")
    return value


Metric = Annotated[float | int | bool | Label | None, AfterValidator(_finite_metric)]


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


class MemoryIn(_Loose):
    """A GPU's stated memory in GB (each part optional)."""

    weights: GB | None = None
    kv_cache: GB | None = None
    activations: GB | None = None
    buffers: GB | None = None
    total: GB | None = None


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
    memory_gb: MemoryIn | None = None


class PlanFile(_Loose):
    """A plan file as read; figures it states (metrics, memory, claims) are kept, not trusted."""

    instance: ResultName | None = None
    status: Label | None = None
    num_gpus: Pos | None = None
    degrees: DegreesIn
    micro_batches: Pos = 1
    sequences_per_micro_batch: Idx | None = None
    num_experts: Pos | None = None
    redundant_experts: Idx | None = None
    dense_layers: list[Idx] | None = None
    stages: list[StageIn] | None = None
    expert_placement: dict[str, list[list[Idx]]] | None = None
    gpus: list[GpuIn] | None = None
    metrics: dict[str, Metric] | None = None
    moe_token_exchange: MoeTokenExchange | None = None

# ----------------------------------------------------------------------------------------------
# Reading (the rules are in ``optimizer.plan.rules``)


def read_plan(f: PlanFile, inst: Instance | None = None, source: str = "(in memory)",
              cap_gpus: bool = True, partial: bool = False) -> tuple[PlanData | None, list[Problem]]:
    """The plan with every rule applied, or None and the problems found. A rule the reading
    could not get to (an earlier problem stopped it) counts as a problem too.
    ``cap_gpus``: more than MAX_PLAN_GPUS GPUs is an InputError (export, report).
    ``partial`` (the report): no layers or no experts known is read as none, not refused."""
    return rules.read(f, inst, source, cap_gpus, partial)


def plan_data(f: PlanFile, inst: Instance | None = None, source: str = "(in memory)",
              partial: bool = False) -> PlanData:
    """``read_plan`` for commands that stop on the first problem (exit 2, one line)."""
    data, problems = read_plan(f, inst, source, partial=partial)
    if data is None:
        raise InputError(problems[0].message)
    return data


# ----------------------------------------------------------------------------------------------
# Checking against an instance (``moeopt check``; the report with an instance)


def plan_from_file(inst: Instance, f: PlanFile, source: str = "(in memory)"
                   ) -> tuple[Plan | None, list[Check]]:
    """A Plan plus the structural checks; the Plan is None when the structure is broken."""
    plan, checks, _ = check_structure(inst, f, source)
    return plan, checks


def check_structure(inst: Instance, f: PlanFile, source: str = "(in memory)",
                    replicas: bool = False) -> tuple[Plan | None, list[Check], list[Problem]]:
    """``plan_from_file`` plus the reader's problems (the same rules ``export`` applies, each
    with its one-line reason). ``replicas``: a plan with redundant expert slots is read and
    returned (``moeopt check``, which adds their weights: ``plan.replicas``); without it, such
    a plan is refused (callers whose figures leave the replicas' weights out)."""
    data, problems = read_plan(f, inst, source, cap_gpus=False)
    d = f.degrees
    etp = d.etp or 1
    per_stage = d.tp * d.dp
    edp = d.edp or (per_stage // (etp * d.ep) if per_stage % (etp * d.ep) == 0 else 0)
    deg = data.deg if data else Degrees(d.tp, d.pp, d.dp, d.ep, etp, edp, f.micro_batches)
    broken = {p.rule for p in problems}
    checks = _degree_checks(inst, f, deg, broken)
    if deg.num_gpus > inst.hardware.num_gpus or deg.pp > inst.model.num_layers:
        return None, checks, problems  # nothing sensible to lay out (far too many ranks to try)
    checks += [_rule(RULE_STAGES, RULE_STAGES not in broken),
               _rule(RULE_PLACEMENT, RULE_PLACEMENT not in broken
                     and (replicas or data is None or data.experts.redundant == 0)),
               _rule(RULE_LAYOUT, RULE_LAYOUT not in broken)]
    if data is not None and data.experts.redundant and not replicas:
        problems.append(Problem(RULE_PLACEMENT, f"plan {source}: {data.experts.redundant} "
                                "redundant expert slots: check evaluates plans without replicas"))
    if data is None or not all(c.ok for c in checks):
        return None, checks, problems
    return data.to_plan(), checks, problems


def _rule(name: str, ok: bool) -> Check:
    return Check(name, 1.0 if ok else 0.0, 1.0, "rule", ok)


def _degree_checks(inst: Instance, f: PlanFile, deg: Degrees, broken: set[str]) -> list[Check]:
    m, hw = inst.model, inst.hardware
    n = f.num_gpus or deg.num_gpus
    kv_ok = m.num_kv_heads % deg.tp == 0 or deg.tp % m.num_kv_heads == 0
    return [
        _rule(RULE_GPUS, deg.num_gpus == n and RULE_GPUS not in broken),
        _rule(RULE_FOLDING, deg.etp * deg.ep * deg.edp == deg.gpus_per_stage and RULE_FOLDING not in broken),
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


# ----------------------------------------------------------------------------------------------
# Writing


def plan_head(plan: Plan, status: str) -> dict:
    """The keys every plan file opens with, in the contract's order (static and service plans)."""
    d = plan.deg
    return {
        "schema_version": SCHEMA_VERSION,
        "instance": plan.instance,
        "status": status,
        "num_gpus": d.num_gpus,
        "degrees": {"tp": d.tp, "pp": d.pp, "dp": d.dp, "ep": d.ep, "etp": d.etp, "edp": d.edp},
    }


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
        **plan_head(plan, status),
        "micro_batches": d.micro_batches,
        "sequences_per_micro_batch": ev.costs.seqs_per_micro_batch,
        "stages": [{"stage": j, "layers": list(layers)} for j, layers in enumerate(plan.stages)],
        "expert_placement": {str(layer): [list(r) for r in ranks]
                             for layer, ranks in sorted(plan.placement.items())},
        "gpus": gpus,
        "metrics": ev.metrics(),
        "solver": solver,
    }


def record_exchange(doc: dict, inst: Instance) -> dict:
    """``doc`` (a plan file being written) with the instance's ``moe_token_exchange`` when it
    is not the default "deepep" (absent = deepep, so every other plan reads as before)."""
    if inst.hardware.moe_token_exchange != "deepep":
        doc["moe_token_exchange"] = inst.hardware.moe_token_exchange
    return doc


# ----------------------------------------------------------------------------------------------
# From a file or a parsed document (export, report)


def plan_from_doc(doc: object, inst: Instance | None = None, source: str = "(in memory)") -> PlanData:
    """Validate a parsed plan document and read it (InputError, exit 2, on the first problem)."""
    what = f"plan {source}"
    if not isinstance(doc, dict):
        raise InputError(f"{what}: the top level must be a JSON object")
    if doc.get("status") in ("infeasible", "unknown") and "degrees" not in doc:
        raise InputError(f"{what}: status={doc['status']!r}: the file holds no plan")
    try:
        f = PlanFile.model_validate(doc)
    except ValidationError as exc:
        raise InputError(validation_message(what, exc)) from None
    return plan_data(f, inst, source)


def load_plan(path: str | os.PathLike, inst: Instance | None = None) -> PlanData:
    """Read, validate and fill in the plan file at ``path`` (``inst`` adds the model's facts)."""
    return plan_from_doc(read_json(path, "plan"), inst, str(path))
