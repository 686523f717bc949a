"""What the report shows, gathered from a plan (+ instance) and the sweep tables: ``collect``
builds a ``ReportData`` from the one plan reader (``optimizer.plan.files``: with the instance
when the plan fits it, else the plan on its own, partially); ``rank_loads`` and
``requirement_rows`` derive the figures the pictures and tables share; ``read_table`` and
``sweep_points`` read ``results/<instance>/sweep.csv`` / ``pareto.csv``. No drawing, no HTML.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.layout import Degrees, GpuSlot
from optimizer.costs.units import LOAD_SCALE, bytes_to_gb
from optimizer.errors import InputError
from optimizer.inputs.files import validation_message
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import RELATION, Check, Evaluation, evaluate
from optimizer.plan.files import PlanFile, plan_data, plan_from_file

MEMORY_PARTS = ("weights", "kv_cache", "activations", "buffers")
TABLE_FILES = ("sweep.csv", "pareto.csv")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
PARETO_NEEDS = ("num_gpus", "ttft_s", "throughput_tokens_per_ms_per_gpu", "load_imbalance",
                "communication_ms")
PLAN_KEY = ("num_gpus", "tp", "pp", "dp", "ep", "etp", "edp", "micro_batches")


@dataclass
class ReportData:
    """Everything the page shows; ``placement`` is {MoE layer: [[expert ids] per EP rank]}."""

    doc: dict
    name: str
    deg: Degrees
    slots: tuple[GpuSlot, ...]
    placement: dict[int, list[list[int]]]
    memory: list[tuple[float, float, float, float]] | None  # GB per GPU, in rank order
    inst: Instance | None = None
    ev: Evaluation | None = None
    structure: list[Check] = field(default_factory=list)
    loads: dict[int, tuple[int, ...]] | None = None  # MoE layer -> parts of LOAD_SCALE per expert
    stages: list[tuple[int, list[int]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory_source: str = ""


def collect(inst: Instance | None, doc: dict) -> ReportData:
    """Validate the plan (structure only) and gather what the pictures need. The plan is read
    by the one plan reader (``optimizer.plan.files``): against the instance when it fits, else
    on its own (partially: a plan may state no layers or experts); an inconsistent plan is
    refused (exit 2) as ``export`` refuses it."""
    if not isinstance(doc, dict):
        raise InputError(f"plan: expected a JSON object, got {type(doc).__name__}")
    if doc.get("status") in ("infeasible", "unknown") and "degrees" not in doc:
        why = doc.get("explanation") or "no deployment found"
        raise InputError(f"plan: status={doc['status']!r}: there is no deployment to report ({why})")
    try:
        pf = PlanFile.model_validate(doc)
    except ValidationError as exc:
        raise InputError(validation_message("plan", exc)) from None
    notes: list[str] = []
    plan, structure = None, []
    if inst is not None:
        if pf.instance not in (None, inst.name):
            notes.append(f"the plan names instance {pf.instance!r} but the instance given is "
                         f"{inst.name!r}")
        plan, structure = plan_from_file(inst, pf, "plan")
        if plan is None:
            bad = ", ".join(c.name for c in structure if not c.ok)
            notes.append(f"the plan does not fit instance {inst.name!r} ({bad}); loads, "
                         "requirements and recomputed figures are left out")
    read = plan_data(pf, None, "plan", partial=True) if plan is None else None
    deg = plan.deg if plan is not None else read.deg
    name = inst.name if inst else str(pf.instance or "")
    data = ReportData(doc, name, deg, (), {}, None, inst, structure=structure, notes=notes)
    if pf.gpus is None and plan is None:
        data.notes.append("the plan lists no GPUs: Megatron's default rank order with "
                          f"{read.gpus_per_node} GPUs per node is shown")
    if plan is not None:
        data.ev = evaluate(inst, plan)
        data.slots = plan.slots
        data.placement = {layer: [list(r) for r in ranks] for layer, ranks in sorted(plan.placement.items())}
        data.loads = dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))  # MoE layers in order
        data.stages = [(j, list(layers)) for j, layers in enumerate(plan.stages)]
        if pf.gpus is None:
            data.notes.append("the plan lists no GPUs: Megatron's default rank order is shown")
        if pf.expert_placement is None:
            data.notes.append("the plan gives no expert placement: contiguous blocks are shown")
    else:
        data.slots = read.gpus
        data.placement = {layer: [list(r) for r in read.experts.ranks(layer)]
                          for layer in read.experts.moe_layers} if pf.expert_placement else {}
        data.stages = [(j, list(layers)) for j, layers in enumerate(read.stages)] if pf.stages else []
    data.memory = _memory(pf, data)
    return data


def _memory(pf: PlanFile, data: ReportData) -> list[tuple[float, float, float, float]] | None:
    """GB per GPU and part, from the plan's ``gpus`` list, else from the evaluation."""
    by_rank = {}
    for g in pf.gpus or []:
        mem = g.memory_gb.model_dump() if g.memory_gb is not None else {}
        if all(mem.get(k) is not None for k in MEMORY_PARTS):
            by_rank[g.rank] = tuple(float(mem[k]) for k in MEMORY_PARTS)
    if data.slots and all(s.rank in by_rank for s in data.slots):
        data.memory_source = "as the plan states"
        return [by_rank[s.rank] for s in data.slots]
    if data.ev is not None:
        data.memory_source = "recomputed from the instance"
        parts = [tuple(bytes_to_gb(getattr(m, k)) for k in MEMORY_PARTS) for m in data.ev.stage_memory]
        return [parts[s.stage] for s in data.slots]
    return None


def is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def range_text(layers: list[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


def rank_loads(data: ReportData) -> dict[int, list[float]]:
    """{MoE layer: [routed load of each EP rank / mean rank load]}; replicas share the load."""
    out = {}
    for layer, ranks in data.placement.items():
        if data.loads is None or layer not in data.loads:
            continue
        copies: dict[int, int] = {}
        for r in ranks:
            for e in r:
                copies[e] = copies.get(e, 0) + 1
        row = data.loads[layer]
        out[layer] = [sum(row[e] / copies[e] for e in r) * len(ranks) / LOAD_SCALE for r in ranks]
    return out


def requirement_rows(data: ReportData) -> list[tuple[str, float, float, str, str, bool]]:
    """(name, value, target, unit, relation, ok) of each requirement the instance sets."""
    if data.inst is None:
        return []
    if data.ev is not None:
        rows = [(c.name, c.value, c.limit, c.unit, RELATION.get(c.name, "vs"), c.ok)
                for c in data.ev.checks]
    else:
        rows = _stated_requirements(data, RELATION)
    return rows


def _stated_requirements(data: ReportData, relation: dict) -> list[tuple]:
    req, m = data.inst.requirements, data.doc.get("metrics") or {}
    rows = []
    if is_number(m.get("max_memory_gb")):
        lim = data.inst.memory_limit_gb
        rows.append(("memory_per_gpu", m["max_memory_gb"], lim, "GB", "<=", m["max_memory_gb"] <= lim))
    if req.max_ttft_s is not None and is_number(m.get("ttft_s")):
        rows.append(("ttft", m["ttft_s"], req.max_ttft_s, "s", "<", m["ttft_s"] < req.max_ttft_s))
    key = ("throughput_tokens_per_ms_per_gpu" if req.throughput_scope == "per_gpu"
           else "throughput_tokens_per_ms")
    if req.min_throughput_tokens_per_ms and is_number(m.get(key)):
        target = req.min_throughput_tokens_per_ms
        unit = "tokens/ms/GPU" if req.throughput_scope == "per_gpu" else "tokens/ms"
        rows.append(("throughput", m[key], target, unit, ">=", m[key] >= target))
    if req.max_tpot_ms is not None and is_number(m.get("tpot_ms")):
        rows.append(("tpot", float(m["tpot_ms"]), float(req.max_tpot_ms), "ms", "<=",
                     m["tpot_ms"] <= req.max_tpot_ms))
    return rows


def read_table(path: Path) -> list[dict] | str:
    """The CSV's rows, or why it cannot be read (a bad table must not stop the report)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return f"{path} cannot be read ({exc}); no plot."


def _flag(text: str | None) -> bool:
    return str(text).strip().lower() in ("true", "1", "yes")


# Table values beyond this magnitude are not metrics of a real deployment (and matplotlib
# cannot lay out an axis from -1e308 to 1e308): they are left out of the plot like text.
PLOTTABLE_MAX = 1e15


def _float(text: str | None) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) and abs(value) <= PLOTTABLE_MAX else math.nan


def _kind(row: dict) -> str:
    if _flag(row.get("pareto")):
        return "pareto"
    return "dominated" if _flag(row.get("feasible", "true")) else "infeasible"


def sweep_points(data: ReportData, rows: list[dict]) -> list[dict]:
    """One point per table row: the PARETO_NEEDS columns as floats (nan when unreadable),
    ``kind`` ('pareto', 'dominated' or 'infeasible') and ``mine`` (the row is this plan)."""
    key_cols = [k for k in PLAN_KEY if k in rows[0]]
    plan_key = tuple(float(getattr(data.deg, k, data.deg.num_gpus)) for k in key_cols)
    return [{k: _float(r.get(k)) for k in PARETO_NEEDS}
            | {"kind": _kind(r), "mine": tuple(_float(r.get(k)) for k in key_cols) == plan_key}
            for r in rows]
