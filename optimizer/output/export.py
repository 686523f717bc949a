"""Export a plan to the files a runtime consumes: SGLang, vLLM, TensorRT-LLM, Megatron-Core, CSV.

One internal representation serves every runtime (runtimes.md §1.6): per MoE layer a list of
physical expert slots whose entries are logical expert ids, the slots of EP rank r being the
contiguous block ``[r*S, (r+1)*S)`` with ``S = slots / ep``. A logical id that appears k times
has k replicas (``redundant_experts = slots - experts``).

How a moeopt plan maps (per pipeline stage the same ``tp*dp`` GPUs are attention TP x DP and MoE
ETP x EP x EDP, Megatron order, TP and ETP fastest):

* EDP > 1 means ``edp`` independent copies of the EP x ETP expert group. Serving runtimes have
  no EDP inside one server, so each copy becomes one *instance* (a separate server) of
  ``tp`` x ``dp/edp`` attention GPUs per stage; this needs every attention TP group inside one
  copy (``ep*etp`` a multiple of ``tp``), else the plan is not expressible (exit 2).
* Inside an instance the MoE spans all ``T = tp*dp_i`` GPUs of a stage as EP x ETP.

Every exporter checks the runtime's own rules and raises ``InputError`` (exit 2, one line) when
the plan cannot be expressed; what it can express but only approximately becomes a warning
that is printed and written to the README.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from optimizer.errors import InputError
from optimizer.inputs.files import read_json, validation_message, write_atomic
from optimizer.costs.layout import Degrees, GpuSlot, megatron_layout
from optimizer.plan.files import PlanFile, even_stages

FORMATS = ("sglang", "vllm", "trtllm", "megatron", "csv")
DEFAULT_GPUS_PER_NODE = 8


# ----------------------------------------------------------------------------------------------
# The shared representation


@dataclass(frozen=True)
class ExpertMap:
    """Per MoE layer the physical slots (logical expert ids), grouped contiguously per EP rank."""

    num_layers: int                      # hidden layers of the model, dense ones included
    num_experts: int                     # logical (routed) experts E
    ep: int
    slots: dict[int, tuple[int, ...]]    # MoE layer index -> P logical ids

    @property
    def num_slots(self) -> int:
        return len(next(iter(self.slots.values()))) if self.slots else self.num_experts

    @property
    def redundant(self) -> int:
        return self.num_slots - self.num_experts

    @property
    def slots_per_rank(self) -> int:
        return self.num_slots // self.ep

    @property
    def moe_layers(self) -> list[int]:
        return sorted(self.slots)

    @property
    def dense_layers(self) -> list[int]:
        return [layer for layer in range(self.num_layers) if layer not in self.slots]

    def rank_slots(self, layer: int, ep_rank: int) -> tuple[int, ...]:
        s = self.slots_per_rank
        return self.slots[layer][ep_rank * s:(ep_rank + 1) * s]

    def trivial_row(self) -> list[int]:
        """SGLang's ``trivial`` map: physical slot p holds logical expert p mod E."""
        return [p % self.num_experts for p in range(self.num_slots)]

    def row(self, layer: int) -> list[int]:
        """physical_to_logical row of any hidden layer (dense layers: the trivial map)."""
        return list(self.slots[layer]) if layer in self.slots else self.trivial_row()

    def is_contiguous(self) -> bool:
        """True when every layer is the runtimes' default: no replicas, EP rank r holding the
        experts ``[r*E/ep, (r+1)*E/ep)`` (in any order)."""
        if self.redundant or self.num_experts % self.ep:
            return False
        s = self.num_experts // self.ep
        return all(sorted(self.rank_slots(layer, r)) == list(range(r * s, (r + 1) * s))
                   for layer in self.slots for r in range(self.ep))


@dataclass(frozen=True)
class ExportPlan:
    """A validated plan, in the terms the exporters need."""

    name: str
    source: str
    deg: Degrees
    stages: tuple[tuple[int, ...], ...]
    experts: ExpertMap
    gpus: tuple[GpuSlot, ...]            # sorted by rank
    memory: dict[int, dict]              # rank -> memory_gb block (may be empty)
    gpus_per_node: int
    metrics: dict
    notes: tuple[str, ...] = ()          # remarks made while reading the plan

    @property
    def num_layers(self) -> int:
        return self.experts.num_layers

    def gpu_experts(self, gpu: GpuSlot) -> dict[int, tuple[int, ...]]:
        """MoE layer -> the physical slots (logical ids) the plan gives this GPU."""
        return {layer: self.experts.rank_slots(layer, gpu.ep_rank)
                for layer in self.stages[gpu.stage] if layer in self.experts.slots}


# ----------------------------------------------------------------------------------------------
# Reading a plan


def load_plan(path: str | os.PathLike, inst=None) -> ExportPlan:
    """Read and validate a plan file; ``inst`` (an Instance) adds model facts and is checked
    against the plan."""
    doc = read_json(path, "plan")
    return plan_from_doc(doc, inst, str(path))


def plan_from_doc(doc: object, inst=None, source: str = "(in memory)") -> ExportPlan:
    what = f"plan {source}"
    if not isinstance(doc, dict):
        raise InputError(f"{what}: the top level must be a JSON object")
    if doc.get("status") in ("infeasible", "unknown") and "degrees" not in doc:
        raise InputError(f"{what}: status={doc['status']!r}: the file holds no plan to export")
    try:
        f = PlanFile.model_validate(doc)
    except ValidationError as exc:
        raise InputError(validation_message(what, exc)) from None
    notes: list[str] = []
    deg = _degrees(f, what)
    num_layers = _num_layers(f, inst, what)
    stages = _stages(f, deg, num_layers, what)
    experts = _expert_map(f, doc, inst, deg, num_layers, what, notes)
    gpn = _gpus_per_node(f, inst, notes)
    gpus = _gpus(f, deg, gpn, what)
    memory = {}
    for g in f.gpus or []:
        extra = g.model_extra or {}
        if isinstance(extra.get("memory_gb"), dict):
            memory[g.rank] = extra["memory_gb"]
    name = f.instance or (inst.name if inst is not None else Path(source).stem)
    if inst is not None and f.instance and f.instance != inst.name:
        notes.append(f"the plan names instance {f.instance!r}, --instance is {inst.name!r}")
    metrics = doc.get("metrics") if isinstance(doc.get("metrics"), dict) else {}
    return ExportPlan(name, source, deg, stages, experts, gpus, memory, gpn, metrics, tuple(notes))


def _degrees(f: PlanFile, what: str) -> Degrees:
    d = f.degrees
    per_stage = d.tp * d.dp
    etp = d.etp or 1
    if d.edp is None:
        if per_stage % (etp * d.ep):
            raise InputError(f"{what}: degrees: etp*ep={etp * d.ep} does not divide tp*dp={per_stage}")
        edp = per_stage // (etp * d.ep)
    else:
        edp = d.edp
    if etp * d.ep * edp != per_stage:
        raise InputError(f"{what}: degrees: etp*ep*edp={etp * d.ep * edp} != tp*dp={per_stage} "
                         "(MoE parallel folding needs the same GPUs per stage)")
    deg = Degrees(d.tp, d.pp, d.dp, d.ep, etp, edp, f.micro_batches)
    if f.num_gpus is not None and f.num_gpus != deg.num_gpus:
        raise InputError(f"{what}: num_gpus={f.num_gpus} != tp*pp*dp={deg.num_gpus}")
    return deg


def _num_layers(f: PlanFile, inst, what: str) -> int:
    from_stages = sum(len(s.layers) for s in f.stages) if f.stages is not None else None
    if inst is not None:
        n = inst.model.num_layers
        if from_stages is not None and from_stages != n:
            raise InputError(f"{what}: stages hold {from_stages} layers, the instance has "
                             f"model.num_layers={n}")
        return n
    seen = []
    if f.stages is not None:
        seen += [from_stages] + [max(s.layers) + 1 for s in f.stages if s.layers]
    elif f.expert_placement:
        seen += [int(k) + 1 for k in f.expert_placement if k.strip().isdigit()]
    if not seen:
        raise InputError(f"{what}: no stages and no expert_placement: give --instance to know "
                         "the layers")
    return max(seen)   # a layer a stage misses is then reported as such


def _stages(f: PlanFile, deg: Degrees, num_layers: int, what: str) -> tuple[tuple[int, ...], ...]:
    if f.stages is None:
        return even_stages(num_layers, deg.pp)
    ordered = sorted(f.stages, key=lambda s: s.stage)
    if [s.stage for s in ordered] != list(range(deg.pp)):
        raise InputError(f"{what}: stages: stage numbers {[s.stage for s in ordered]} are not "
                         f"0..{deg.pp - 1} (pp={deg.pp})")
    stages = tuple(tuple(s.layers) for s in ordered)
    flat = [layer for s in stages for layer in s]
    if flat != list(range(num_layers)) or not all(stages):
        raise InputError(f"{what}: stages: layers must be contiguous, non-empty per stage and "
                         f"cover 0..{num_layers - 1} once each")
    return stages


def _int_key(doc: dict, key: str, what: str, low: int) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InputError(f"{what}: {key}={value!r}: must be an integer >= {low}")
    return value


def _expert_map(f: PlanFile, doc: dict, inst, deg: Degrees, num_layers: int, what: str,
                notes: list[str]) -> ExpertMap:
    r_doc = _int_key(doc, "redundant_experts", what, 0)
    e_doc = _int_key(doc, "num_experts", what, 1)
    e_inst = inst.model.num_experts if inst is not None else None
    if e_doc is not None and e_inst is not None and e_doc != e_inst:
        raise InputError(f"{what}: num_experts={e_doc} but the instance has model.num_experts={e_inst}")
    dense_doc = doc.get("dense_layers")
    if dense_doc is not None and (not isinstance(dense_doc, list)
                                  or not all(isinstance(x, int) and 0 <= x < num_layers for x in dense_doc)):
        raise InputError(f"{what}: dense_layers must be a list of layer indices in 0..{num_layers - 1}")
    dense = set(dense_doc or [])
    if dense and inst is not None:
        raise InputError(f"{what}: dense_layers={sorted(dense)} but moeopt instances are all-MoE")

    if f.expert_placement is None:
        experts = e_inst or e_doc
        if experts is None:
            raise InputError(f"{what}: no expert_placement and no num_experts: give --instance "
                             "to export the runtimes' contiguous placement")
        if r_doc:
            raise InputError(f"{what}: redundant_experts={r_doc} needs an expert_placement that "
                             "says where the replicas go")
        if experts % deg.ep:
            raise InputError(f"{what}: ep={deg.ep} does not divide num_experts={experts}")
        notes.append("the plan has no expert_placement: contiguous blocks per EP rank")
        row = tuple(range(experts))
        return ExpertMap(num_layers, experts, deg.ep,
                         {layer: row for layer in range(num_layers) if layer not in dense})

    slots: dict[int, tuple[int, ...]] = {}
    width = None
    for key, ranks in f.expert_placement.items():
        try:
            layer = int(key)
        except ValueError:
            raise InputError(f"{what}: expert_placement key {key!r} is not a layer index") from None
        if not 0 <= layer < num_layers or str(layer) != key.strip():
            raise InputError(f"{what}: expert_placement key {key!r} is not a layer in 0..{num_layers - 1}")
        if layer in dense:
            raise InputError(f"{what}: layer {layer} is in dense_layers and in expert_placement")
        if len(ranks) != deg.ep:
            raise InputError(f"{what}: expert_placement[{key}] has {len(ranks)} EP ranks, "
                             f"degrees.ep={deg.ep}")
        sizes = {len(r) for r in ranks}
        if len(sizes) != 1 or 0 in sizes:
            raise InputError(f"{what}: expert_placement[{key}]: EP ranks hold {sorted(sizes)} slots; "
                             "every rank must hold the same number (>= 1)")
        size = sizes.pop()
        if width is None:
            width = size
        elif size != width:
            raise InputError(f"{what}: expert_placement[{key}] has {size} slots per rank, other "
                             f"layers {width}: runtimes take one slot count for all layers")
        slots[layer] = tuple(x for r in ranks for x in r)
    if not slots:
        raise InputError(f"{what}: expert_placement is empty")
    num_slots = deg.ep * width
    top = max(max(row) for row in slots.values()) + 1
    experts = e_inst or e_doc or (num_slots - r_doc if r_doc is not None else top)
    if experts < 1:
        raise InputError(f"{what}: redundant_experts={r_doc} leaves no logical experts in "
                         f"{num_slots} slots")
    redundant = num_slots - experts
    if redundant < 0:
        raise InputError(f"{what}: {num_slots} slots per layer cannot hold {experts} experts")
    if r_doc is not None and r_doc != redundant:
        raise InputError(f"{what}: redundant_experts={r_doc} but {num_slots} slots - {experts} "
                         f"experts = {redundant}")
    if top > experts:
        raise InputError(f"{what}: expert_placement uses expert id {top - 1}, the model has "
                         f"{experts} experts (ids 0..{experts - 1})")
    for layer, row in slots.items():
        if len(set(row)) != experts:
            missing = sorted(set(range(experts)) - set(row))
            raise InputError(f"{what}: expert_placement[{layer}] misses expert(s) "
                             f"{_ranges(missing[:20])}: every expert needs at least one slot")
    if redundant and r_doc is None:
        notes.append(f"{redundant} redundant slots inferred ({num_slots} slots, {experts} experts)")
    missing_layers = [layer for layer in range(num_layers) if layer not in slots and layer not in dense]
    if missing_layers:
        if inst is not None:
            raise InputError(f"{what}: expert_placement has no entry for layer(s) "
                             f"{_ranges(missing_layers)}; the instance's layers are all MoE")
        notes.append(f"layer(s) {_ranges(missing_layers)} have no expert_placement: exported as "
                     "dense layers (no MoE)")
    return ExpertMap(num_layers, experts, deg.ep, slots)


def _gpus_per_node(f: PlanFile, inst, notes: list[str]) -> int:
    if inst is not None:
        return inst.hardware.gpus_per_node
    if f.gpus:
        if all(g.local_rank is not None for g in f.gpus):
            return max(g.local_rank for g in f.gpus) + 1
        return max(sum(1 for g in f.gpus if g.node == n) for n in {g.node for g in f.gpus})
    notes.append(f"no gpus list and no --instance: assumed {DEFAULT_GPUS_PER_NODE} GPUs per node")
    return DEFAULT_GPUS_PER_NODE


def _gpus(f: PlanFile, deg: Degrees, gpn: int, what: str) -> tuple[GpuSlot, ...]:
    default = megatron_layout(deg, gpn)
    if f.gpus is None:
        return default
    base = {s.rank: s for s in default}
    out = []
    for g in f.gpus:
        b = base.get(g.rank)
        out.append(GpuSlot(g.rank, g.node, g.local_rank if g.local_rank is not None else g.rank % gpn,
                           g.stage, g.tp_rank, g.dp_rank, g.ep_rank,
                           g.etp_rank if g.etp_rank is not None else (b.etp_rank if b else 0),
                           g.edp_rank if g.edp_rank is not None else (b.edp_rank if b else 0)))
    out.sort(key=lambda s: s.rank)
    if [s.rank for s in out] != list(range(deg.num_gpus)):
        raise InputError(f"{what}: gpus: ranks must be 0..{deg.num_gpus - 1} once each")
    for s in out:
        if not (s.stage < deg.pp and s.tp_rank < deg.tp and s.dp_rank < deg.dp and s.ep_rank < deg.ep
                and s.etp_rank < deg.etp and s.edp_rank < deg.edp):
            raise InputError(f"{what}: gpus: rank {s.rank} has a group rank outside the degrees")
    if len({(s.stage, s.tp_rank, s.dp_rank) for s in out}) != len(out):
        raise InputError(f"{what}: gpus: two GPUs share (stage, tp_rank, dp_rank)")
    if len({(s.stage, s.etp_rank, s.ep_rank, s.edp_rank) for s in out}) != len(out):
        raise InputError(f"{what}: gpus: two GPUs share (stage, etp_rank, ep_rank, edp_rank)")
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# Instances and runtime ranks


@dataclass(frozen=True)
class Split:
    """The plan cut into independent serving instances (one per EDP copy)."""

    count: int
    tp: int                       # attention TP inside an instance
    dp: int                       # attention DP inside an instance
    instance: dict[int, int]      # plan rank -> instance
    local_dp: dict[int, int]      # plan rank -> attention DP rank inside its instance

    @property
    def moe_world(self) -> int:
        return self.tp * self.dp


def split_instances(p: ExportPlan, runtime: str) -> Split:
    """EDP copies as separate instances; InputError when a copy would cut an attention TP group."""
    d = p.deg
    if d.edp == 1:
        return Split(1, d.tp, d.dp, {g.rank: 0 for g in p.gpus}, {g.rank: g.dp_rank for g in p.gpus})
    copy_of: dict[tuple[int, int], set[int]] = {}
    for g in p.gpus:
        copy_of.setdefault((g.tp_rank, g.dp_rank), set()).add(g.edp_rank)
        copy_of.setdefault((-1, g.dp_rank), set()).add(g.edp_rank)
    if any(len(v) > 1 for v in copy_of.values()):
        raise InputError(
            f"{runtime}: the plan's {d.edp} expert-data-parallel copies (EDP={d.edp} of EP{d.ep} x "
            f"ETP{d.etp}) cut through attention TP{d.tp} groups (or differ between stages); "
            f"{runtime} has no EDP inside one server, so it cannot be split into separate instances")
    dps: dict[int, set[int]] = {}
    for g in p.gpus:
        dps.setdefault(g.edp_rank, set()).add(g.dp_rank)
    local = {}
    for g in p.gpus:
        local[g.rank] = sorted(dps[g.edp_rank]).index(g.dp_rank)
    return Split(d.edp, d.tp, d.dp // d.edp, {g.rank: g.edp_rank for g in p.gpus}, local)


@dataclass(frozen=True)
class Seat:
    """Where a plan GPU sits in a runtime instance."""

    instance: int
    rank: int          # global rank inside the instance
    ep_rank: int       # the EP rank the runtime gives it


RankRule = Callable[[GpuSlot, Split, ExportPlan], tuple[int, int]]


def seats(p: ExportPlan, split: Split, rule: RankRule) -> dict[int, Seat]:
    out = {}
    for g in p.gpus:
        rank, ep_rank = rule(g, split, p)
        out[g.rank] = Seat(split.instance[g.rank], rank, ep_rank)
    world = len(p.gpus) // split.count
    for k in range(split.count):
        ranks = sorted(s.rank for s in out.values() if s.instance == k)
        if ranks != list(range(world)):   # a bug in a rank rule, not bad input
            raise RuntimeError(f"rank rule gives instance {k} ranks {ranks[:8]}..., not 0..{world - 1}")
    return out


def node_fill_notes(world: int, gpn: int) -> list[str]:
    if world > gpn and world % gpn:
        return [f"an instance of {world} GPUs does not fill whole {gpn}-GPU nodes: the launchers "
                "assume the same GPU count on every node"]
    return []


def seat_warnings(p: ExportPlan, split: Split, placed: dict[int, Seat], runtime: str,
                  note: str = "") -> list[str]:
    """Differences between the runtime's rank order and the plan's GPU layout."""
    warnings = []
    wrong = [g for g in p.gpus if placed[g.rank].ep_rank != g.ep_rank]
    if wrong and p.deg.ep > 1:
        g = wrong[0]
        warnings.append(
            f"{runtime} gives {len(wrong)} of {len(p.gpus)} GPUs another EP rank than the plan "
            f"(plan rank {g.rank}: plan EP rank {g.ep_rank}, {runtime} EP rank {placed[g.rank].ep_rank})"
            f"{note}: each EP rank still holds the plan's experts, but on other GPUs than planned, "
            "so the plan's intra-node expert groups may differ")
    world = len(p.gpus) // split.count
    gpn = p.gpus_per_node

    def runtime_node(s: Seat) -> tuple[int, int]:
        return (s.instance, s.rank // gpn) if world >= gpn else (0, (s.instance * world + s.rank) // gpn)

    to_rt: dict[int, set] = {}
    to_plan: dict[tuple[int, int], set] = {}
    for g in p.gpus:
        node = runtime_node(placed[g.rank])
        to_rt.setdefault(g.node, set()).add(node)
        to_plan.setdefault(node, set()).add(g.node)
    if any(len(v) > 1 for v in to_rt.values()) or any(len(v) > 1 for v in to_plan.values()):
        warnings.append(
            f"{runtime} fills nodes in its own rank order, which groups GPUs onto nodes differently "
            "than the plan's gpus list: groups the plan keeps inside a node may cross nodes "
            "(see the rank map in README.txt)")
    return warnings


def instance_devices(p: ExportPlan, split: Split, placed: dict[int, Seat]) -> list[str | None]:
    """Per instance 'node:gpu,gpu,...' in runtime rank order, or None when it spans nodes."""
    out: list[str | None] = []
    for k in range(split.count):
        members = sorted((s.rank, r) for r, s in placed.items() if s.instance == k)
        nodes = {p.gpus[r].node for _, r in members}
        if len(nodes) != 1:
            out.append(None)
            continue
        out.append(f"{nodes.pop()}:" + ",".join(str(p.gpus[r].local_rank) for _, r in members))
    return out


def rank_map_text(p: ExportPlan, split: Split, placed: dict[int, Seat]) -> str:
    lines = []
    for k in range(split.count):
        members = sorted((s.rank, r) for r, s in placed.items() if s.instance == k)
        plan_ranks = [r for _, r in members]
        if plan_ranks == list(range(plan_ranks[0], plan_ranks[0] + len(plan_ranks))):
            desc = f"runtime ranks 0..{len(members) - 1} = plan ranks {plan_ranks[0]}..{plan_ranks[-1]}"
        else:
            desc = "runtime rank:plan rank " + " ".join(f"{rr}:{r}" for rr, r in members)
        gpus = sorted({(p.gpus[r].node, p.gpus[r].local_rank) for r in plan_ranks})
        nodes: dict[int, list[int]] = {}
        for n, l in gpus:
            nodes.setdefault(n, []).append(l)
        where = "; ".join(f"node {n} GPUs {_ranges(ls)}" for n, ls in sorted(nodes.items()))
        lines.append(f"  instance {k}: {desc} ({where})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Launch:
    """One launch command; ``when`` is a bash condition on NODE_RANK for multi-node variants."""

    command: str
    when: str | None = None
    label: str = ""


@dataclass
class Export:
    fmt: str
    files: dict[str, str]
    launches: list[Launch]
    env: dict[str, str]
    instances: int
    gpus_per_instance: int
    settings: dict
    warnings: list[str]
    notes: list[str] = field(default_factory=list)
    needs: tuple[str, ...] = ()       # shell variables the launch needs besides MODEL
    instance_gpus: list[str | None] = field(default_factory=list)  # CUDA_VISIBLE_DEVICES per
                                                                    # instance (None: multi-node)

    @property
    def variables(self) -> tuple[str, ...]:
        """Shell variables launch.sh needs: MODEL, the multi-node ones, INSTANCE."""
        return ("MODEL",) + self.needs + (("INSTANCE",) if self.instances > 1 else ())

    def summary(self, out_dir: Path, written: list[Path]) -> dict:
        here = str(out_dir.resolve())
        return {"format": self.fmt, "output_dir": str(out_dir), "files": [str(w) for w in written],
                "instances": self.instances, "gpus_per_instance": self.gpus_per_instance,
                "settings": self.settings, "env": self.env, "variables": list(self.variables),
                "launch": [{"when": lc.when, "command": lc.command.replace("$HERE", here)}
                           for lc in self.launches],
                "warnings": self.warnings, "notes": self.notes}


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _command(prog: list[str], args: list[tuple[str, object | None]]) -> str:
    """A multi-line shell command: prog, then one flag (and value) per line."""
    parts = [" ".join(prog)]
    for flag, value in args:
        parts.append(flag if value is None else f"{flag} {value}")
    return " \\\n    ".join(parts)


def _launch_sh(ex: Export, title: str) -> str:
    lines = ["#!/usr/bin/env bash", f"# {title}", "# written by moeopt export; see README.txt",
             "set -euo pipefail", 'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
             'MODEL="${MODEL:?set MODEL to the model path or name}"']
    for var in ex.needs:
        lines.append(f'{var}="${{{var}:?set {var}}}"')
    if ex.instances > 1:
        lines.append(f"# run once per instance: INSTANCE=0..{ex.instances - 1} ({ex.instances} "
                     f"instances of {ex.gpus_per_instance} GPUs; rank map in README.txt)")
        lines.append('INSTANCE="${INSTANCE:?set INSTANCE to 0..' + str(ex.instances - 1) + '}"')
        lines.append('case "$INSTANCE" in')
        for k, devices in enumerate(ex.instance_gpus):
            if devices is None:
                lines.append(f"  {k}) ;;  # spans nodes: GPUs per node in README.txt")
            else:
                node, ids = devices.split(":")
                lines.append(f"  {k}) export CUDA_VISIBLE_DEVICES={ids} ;;  # on node {node}")
        lines.append(f'  *) echo "INSTANCE must be 0..{ex.instances - 1}" >&2; exit 2 ;;')
        lines.append("esac")
        lines.append('PORT="${PORT:-$((30000 + INSTANCE))}"')
    for key, value in ex.env.items():
        lines.append(f"export {key}={_q(value)}")
    if len(ex.launches) == 1:
        lines.append(ex.launches[0].command)
    else:
        for i, lc in enumerate(ex.launches):
            if lc.when:
                lines.append(f"{'if' if i == 0 else 'elif'} [ {lc.when} ]; then")
            else:
                lines.append("else")
            lines.append("  " + lc.command.replace("\n", "\n  "))
        lines.append("fi")
    return "\n".join(lines) + "\n"


def _readme(p: ExportPlan, ex: Export, title: str, body: list[str], rank_map: str | None) -> str:
    d = p.deg
    e = p.experts
    lines = [title, "=" * len(title), "",
             f"plan: {p.source} (instance {p.name})",
             f"moeopt degrees: TP{d.tp} PP{d.pp} DP{d.dp} | MoE EP{d.ep} ETP{d.etp} EDP{d.edp} | "
             f"{d.num_gpus} GPUs, {p.gpus_per_node} per node",
             f"layers: {e.num_layers} ({len(e.moe_layers)} MoE), stages: "
             f"{[len(s) for s in p.stages]}, experts: {e.num_experts} logical, {e.num_slots} slots "
             f"per MoE layer ({e.redundant} redundant), {e.slots_per_rank} per EP rank", ""]
    lines.append(f"instances to launch: {ex.instances} (each {ex.gpus_per_instance} GPUs)")
    if ex.settings:
        lines.append("runtime settings: " + json.dumps(ex.settings))
    if ex.env:
        lines.append("environment: " + " ".join(f"{k}={v}" for k, v in ex.env.items()))
    lines += ["", f"launch (launch.sh; set {', '.join(ex.variables)}):"]
    for lc in ex.launches:
        if lc.label or lc.when:
            lines.append(f"  # {lc.label or lc.when}")
        lines.append("  " + lc.command.replace("\n", "\n  "))
    lines += [""] + body
    if ex.warnings:
        lines += ["", "WARNINGS:"] + [f"  - {w}" for w in ex.warnings]
    if ex.notes:
        lines += ["", "notes:"] + [f"  - {n}" for n in ex.notes]
    if rank_map:
        lines += ["", "rank map (runtime rank -> plan GPU):", rank_map]
    return "\n".join(lines) + "\n"


def _uneven(p: ExportPlan) -> bool:
    return len({len(s) for s in p.stages}) > 1


def _partition(p: ExportPlan) -> str:
    return ",".join(str(len(s)) for s in p.stages)


def _multi_node(world: int, gpn: int) -> int:
    return -(-world // gpn)


# ----------------------------------------------------------------------------------------------
# SGLang


def _sglang_rule(g: GpuSlot, split: Split, p: ExportPlan) -> tuple[int, int]:
    # DP-attention: attn_tp_rank = tp_rank % attn_tp, attn_dp_rank = tp_rank // attn_tp;
    # moe_ep_rank = tp_rank // (tp_size / ep_size) (engine.py); PP stages are the outer index.
    world = split.moe_world
    tp_rank = split.local_dp[g.rank] * split.tp + g.tp_rank
    return g.stage * world + tp_rank, tp_rank // (world // p.deg.ep)


def export_sglang(p: ExportPlan, out_dir: Path) -> Export:
    split = split_instances(p, "sglang")
    d, e = p.deg, p.experts
    world = split.moe_world                         # SGLang --tp: the TP world of one stage
    if d.ep > world or world % d.ep:
        raise InputError(f"sglang: ep={d.ep} must divide the TP world tp={world} (ep <= tp, "
                         "moe_tp = tp/ep)")
    if e.num_slots % d.ep:
        raise InputError(f"sglang: {e.num_slots} physical experts are not divisible by ep={d.ep}")
    placed = seats(p, split, _sglang_rule)
    warnings = seat_warnings(p, split, placed, "sglang")
    args: list[tuple[str, object | None]] = [("--model-path", '"$MODEL"'), ("--tp", world)]
    if split.dp > 1:
        args += [("--dp", split.dp), ("--enable-dp-attention", None)]
    if d.pp > 1:
        args.append(("--pp-size", d.pp))
    args += [("--ep", d.ep), ("--ep-num-redundant-experts", e.redundant),
             ("--init-expert-location", '"$HERE/expert_location.json"'),
             ("--ep-dispatch-algorithm", "static")]
    inst_world = world * d.pp
    nnodes = _multi_node(inst_world, p.gpus_per_node)
    needs: tuple[str, ...] = ()
    if nnodes > 1:
        args += [("--nnodes", nnodes), ("--node-rank", '"$NODE_RANK"'),
                 ("--dist-init-addr", '"$HEAD_ADDR:5000"')]
        needs = ("NODE_RANK", "HEAD_ADDR")
    env = {"SGLANG_PP_LAYER_PARTITION": _partition(p)} if _uneven(p) else {}
    if split.count > 1:
        args.append(("--port", '"$PORT"'))
    cmd = _command(["python3", "-m", "sglang.launch_server"], args)
    settings = {"tp": world, "dp": split.dp, "enable_dp_attention": split.dp > 1, "pp_size": d.pp,
                "ep": d.ep, "moe_tp": world // d.ep, "attn_tp": split.tp,
                "ep_num_redundant_experts": e.redundant, "num_physical_experts": e.num_slots}
    notes = list(p.notes)
    notes += node_fill_notes(inst_world, p.gpus_per_node)
    if d.ep < world:
        notes.append(f"hybrid EP{d.ep} x MoE-TP{world // d.ep}: use --moe-a2a-backend none (the "
                     "default); deepep/mooncake/flashinfer force ep = tp")
    if split.count > 1:
        notes.append(f"{split.count} independent servers (the plan's EDP copies); put a router "
                     "(e.g. sglang-router) in front. SGLang's own --dp without DP-attention would "
                     "pack replicas into one server, but only inside a node")
    ex = Export("sglang", {}, [Launch(cmd)], env, split.count, inst_world, settings, warnings,
                notes, needs, instance_devices(p, split, placed))
    ex.files["expert_location.json"] = sglang_map_json(e)
    ex.files["launch.sh"] = _launch_sh(ex, f"SGLang launch for plan {p.name}")
    body = ["files:",
            f"  expert_location.json  {{\"physical_to_logical_map\": [{e.num_layers}][{e.num_slots}]}}: one "
            "row per hidden layer (dense layers get the trivial map p mod E); physical slot p lives "
            f"on EP rank p // {e.slots_per_rank}",
            "", "mapping: moeopt attention TP x DP per stage -> SGLang --tp = TP*DP GPUs with "
            "DP-attention (attn_tp = tp/dp) when DP > 1; MoE EP x ETP -> --ep, moe_tp = tp/ep."]
    ex.files["README.txt"] = _readme(p, ex, f"SGLang export of {p.name}", body,
                                     rank_map_text(p, split, placed))
    return ex


def sglang_map_json(e: ExpertMap) -> str:
    rows = ",\n".join("    " + json.dumps(e.row(layer), separators=(",", ":"))
                      for layer in range(e.num_layers))
    return "{\n  \"physical_to_logical_map\": [\n" + rows + "\n  ]\n}\n"


# ----------------------------------------------------------------------------------------------
# TensorRT-LLM


def _trtllm_rule(g: GpuSlot, split: Split, p: ExportPlan) -> tuple[int, int]:
    # Mapping: pp_rank = rank // tp; moe_ep_rank = tp_rank % moe_ep (EP fastest, mapping.py).
    world = split.moe_world
    tp_rank = split.local_dp[g.rank] if split.dp > 1 else g.tp_rank
    return g.stage * world + tp_rank, tp_rank % p.deg.ep


def export_trtllm(p: ExportPlan, out_dir: Path) -> Export:
    split = split_instances(p, "trtllm")
    d, e = p.deg, p.experts
    if split.tp > 1 and split.dp > 1:
        raise InputError(
            f"trtllm: attention TP{split.tp} x DP{split.dp} per instance cannot be expressed: "
            "enable_attention_dp gives each of the tensor_parallel_size ranks its own attention "
            "(attention TP 1), without it attention is TP over all ranks")
    tp = split.moe_world
    if d.etp * d.ep != tp:
        raise InputError(f"trtllm: moe_tp*moe_ep = {d.etp}*{d.ep} != tensor_parallel_size={tp}")
    if e.num_slots % d.ep or e.num_slots < e.num_experts:
        raise InputError(f"trtllm: num_slots={e.num_slots} must be >= {e.num_experts} experts and "
                         f"divisible by moe_expert_parallel_size={d.ep}")
    placed = seats(p, split, _trtllm_rule)
    note = (f" (TensorRT-LLM orders MoE ranks EP-fastest, moe_ep_rank = tp_rank % {d.ep}, "
            "the plan ETP-fastest)") if d.etp > 1 else ""
    warnings = seat_warnings(p, split, placed, "trtllm", note)
    settings = {"tensor_parallel_size": tp, "pipeline_parallel_size": d.pp,
                "moe_expert_parallel_size": d.ep, "moe_tensor_parallel_size": d.etp,
                "enable_attention_dp": split.dp > 1, "pp_partition": [len(s) for s in p.stages]}
    balancer = d.ep > 1 or e.redundant > 0
    yaml = trtllm_yaml(settings, e if balancer else None,
                       f"plan {p.name}: one instance of {tp * d.pp} GPUs, launch {split.count}")
    world = tp * d.pp
    args: list[tuple[str, object | None]] = [
        ("--tp_size", tp), ("--pp_size", d.pp), ("--ep_size", d.ep),
        ("--extra_llm_api_options", '"$HERE/extra_llm_api_options.yaml"')]
    if split.count > 1:
        args.append(("--port", '"$PORT"'))
    nnodes = _multi_node(world, p.gpus_per_node)
    prog = ["trtllm-serve", '"$MODEL"']
    if nnodes > 1:
        prog = ["srun", f"-N {nnodes}", f"--ntasks {world}",
                f"--ntasks-per-node {min(world, p.gpus_per_node)}", "trtllm-llmapi-launch"] + prog
    notes = list(p.notes)
    notes += node_fill_notes(world, p.gpus_per_node)
    if balancer:
        notes.append("moe_config.backend WIDEEP: the static load balancer (num_slots + "
                     "initial_global_assignments) is the WideEP EPLB path of examples/wide_ep")
    else:
        notes.append("EP1 without replicas: every GPU holds all experts, no moe_config written")
    if split.count > 1:
        notes.append(f"TensorRT-LLM has no DP degree: launch {split.count} separate instances "
                     "(the plan's EDP copies) behind a load balancer")
    ex = Export("trtllm", {}, [Launch(_command(prog, args))], {}, split.count, world, settings,
                warnings, notes, (), instance_devices(p, split, placed))
    ex.files["extra_llm_api_options.yaml"] = yaml
    ex.files["launch.sh"] = _launch_sh(ex, f"TensorRT-LLM launch for plan {p.name}")
    body = ["files:",
            "  extra_llm_api_options.yaml  degrees, pp_partition and (EP > 1) moe_config.load_balancer "
            f"(num_slots {e.num_slots}, initial_global_assignments for {len(e.moe_layers)} MoE "
            f"layers keyed by layer index, layer_updates_per_iter 0 = static); slots "
            f"[r*{e.slots_per_rank}, (r+1)*{e.slots_per_rank}) belong to EP rank r",
            "", "mapping: world = tensor_parallel_size * pipeline_parallel_size; MoE world = "
            "tensor_parallel_size = moe_tp * moe_ep; attention DP = enable_attention_dp over the "
            "tp ranks; the plan's EDP copies are separate instances."]
    ex.files["README.txt"] = _readme(p, ex, f"TensorRT-LLM export of {p.name}", body,
                                     rank_map_text(p, split, placed))
    return ex


def trtllm_yaml(settings: dict, e: ExpertMap | None, comment: str) -> str:
    def scalar(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(str(x) for x in v) + "]"
        return str(v)

    lines = [f"# TensorRT-LLM extra LLM API options written by moeopt export ({comment})"]
    lines += [f"{k}: {scalar(v)}" for k, v in settings.items()]
    if e is None:
        return "\n".join(lines) + "\n"
    lines += ["moe_config:", "  backend: WIDEEP", "  load_balancer:",
              f"    num_slots: {e.num_slots}", "    layer_updates_per_iter: 0",
              "    initial_global_assignments:"]
    lines += [f"      {layer}: {scalar(list(e.slots[layer]))}" for layer in e.moe_layers]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# vLLM


def _vllm_rule(g: GpuSlot, split: Split, p: ExportPlan) -> tuple[int, int]:
    # Rank tensor (DP, PP, PCP, TP), TP fastest; EP group = DP x TP slice of one stage.
    dp = split.local_dp[g.rank]
    ep_rank = dp * split.tp + g.tp_rank if p.deg.ep > 1 else 0
    return dp * (p.deg.pp * split.tp) + g.stage * split.tp + g.tp_rank, ep_rank


def vllm_linear(e: ExpertMap) -> dict[int, tuple[int, ...]]:
    """vLLM's initial physical->logical map (eplb_state.py): [0..E-1] then i mod E for the
    redundant slots, the same for every MoE layer; EP rank r holds a contiguous block."""
    row = tuple(list(range(e.num_experts)) + [i % e.num_experts for i in range(e.redundant)])
    return {layer: row for layer in e.moe_layers}


def rank_loads(slots: tuple[int, ...], ep: int, loads: list[float] | tuple) -> list[float]:
    """Routed load per EP rank: each slot carries its expert's load / number of replicas."""
    copies: dict[int, int] = {}
    for x in slots:
        copies[x] = copies.get(x, 0) + 1
    s = len(slots) // ep
    return [sum(loads[x] / copies[x] for x in slots[r * s:(r + 1) * s]) for r in range(ep)]


def hot_over_mean(slots_by_layer: dict[int, tuple[int, ...]], ep: int, loads) -> dict[int, float]:
    out = {}
    for layer, slots in slots_by_layer.items():
        per_rank = rank_loads(slots, ep, loads[layer])
        mean = sum(per_rank) / ep
        out[layer] = max(per_rank) / mean if mean > 0 else 1.0
    return out


def export_vllm(p: ExportPlan, out_dir: Path, loads=None) -> Export:
    split = split_instances(p, "vllm")
    d, e = p.deg, p.experts
    width = split.moe_world
    if d.ep > 1:
        if d.ep != width or d.etp != 1:
            raise InputError(
                f"vllm: EP = TP x DP: the plan has EP{d.ep} x ETP{d.etp} over attention TP{split.tp} x "
                f"DP{split.dp} = {width} GPUs per instance; vLLM needs ep = {width} and etp = 1")
    elif d.etp != width:
        raise InputError(
            f"vllm: without EP vLLM tensor-slices every expert over all TP x DP = {width} GPUs; "
            f"the plan has ETP{d.etp} x EDP{width // d.etp} per instance")
    if e.redundant and d.ep == 1:
        raise InputError(f"vllm: {e.redundant} redundant experts need EPLB, which vLLM allows only "
                         "with expert parallelism (the plan has ep=1)")
    placed = seats(p, split, _vllm_rule)
    warnings = seat_warnings(p, split, placed, "vllm")
    args: list[tuple[str, object | None]] = [("-tp", split.tp), ("-pp", d.pp), ("-dp", split.dp)]
    if d.ep > 1:
        args.append(("--enable-expert-parallel", None))
        if e.redundant:
            args.append(("--enable-eplb", None))
        args.append(("--eplb-config", _q(json.dumps({"num_redundant_experts": e.redundant}))))
    if split.count > 1:
        args.append(("--port", '"$PORT"'))
    env = {"VLLM_PP_LAYER_PARTITION": _partition(p)} if _uneven(p) else {}
    rank_world = split.tp * d.pp
    world = rank_world * split.dp
    gpn = p.gpus_per_node
    launches = []
    needs: tuple[str, ...] = ()
    notes = list(p.notes)
    if world > gpn and split.dp > 1 and gpn % rank_world == 0 and split.dp % (gpn // rank_world) == 0:
        local = gpn // rank_world
        common = args + [("--data-parallel-size-local", local),
                         ("--data-parallel-address", '"$HEAD_ADDR"'),
                         ("--data-parallel-rpc-port", 13345)]
        launches.append(Launch(_command(["vllm", "serve", '"$MODEL"'], common),
                               '"$NODE_RANK" = 0', "node 0 (head)"))
        launches.append(Launch(_command(["vllm", "serve", '"$MODEL"'], common + [
            ("--data-parallel-start-rank", f'"$((NODE_RANK * {local}))"'), ("--headless", None)]),
            None, "other nodes"))
        needs = ("NODE_RANK", "HEAD_ADDR")
        notes.append(f"multi-node DP: {split.dp // local} nodes, {local} DP ranks of TP{split.tp}"
                     f"xPP{d.pp} per node")
    else:
        launches.append(Launch(_command(["vllm", "serve", '"$MODEL"'], args)))
        if rank_world > gpn:
            notes.append("one DP rank's TP x PP spans nodes: vLLM runs it on a Ray cluster")
        elif world > gpn:
            notes.append(f"{split.dp} DP ranks of {rank_world} GPUs do not pack evenly onto "
                         f"{gpn}-GPU nodes: write the per-node --data-parallel-size-local / "
                         "--data-parallel-start-rank commands by hand")
    settings = {"tensor_parallel_size": split.tp, "pipeline_parallel_size": d.pp,
                "data_parallel_size": split.dp, "enable_expert_parallel": d.ep > 1,
                "expert_parallel_size": d.ep if d.ep > 1 else 1,
                "num_redundant_experts": e.redundant, "enable_eplb": bool(e.redundant)}
    if split.count > 1:
        notes.append(f"{split.count} separate vLLM deployments (the plan's EDP copies): vLLM's "
                     "-dp would spread the MoE over all DP ranks")
    lost = vllm_loss_text(p, loads) if d.ep > 1 else [
        "expert placement: no EP (experts tensor-sliced over all GPUs), nothing is lost."]
    if d.ep > 1 and not e.is_contiguous():
        warnings.insert(0, "vLLM cannot take an explicit expert map: the plan's placement reverts "
                           f"to vLLM's linear placement ({_loss_short(p, loads)})")
    ex = Export("vllm", {}, launches, env, split.count, world, settings, warnings, notes, needs,
                instance_devices(p, split, placed))
    ex.files["launch.sh"] = _launch_sh(ex, f"vLLM launch for plan {p.name}")
    body = ["WHAT vLLM CANNOT TAKE TODAY:",
            "  an explicit expert-to-GPU map. Mainline vLLM accepts only the degrees, the placement",
            "  strategy (linear | round_robin) and a redundant-expert count; the initial map is its",
            "  own and EPLB (--enable-eplb) then moves experts at runtime from measured loads.",
            "  Open, unmerged: PR #34811 (--expert-placement-file, expert_to_ep_rank) and PR #49572",
            "  (eplb_config.initial_expert_map_path, per-layer physical->logical lists).", ""]
    body += lost
    body += ["", "mapping: -tp = attention TP, -dp = attention DP, -pp = PP; EP = TP x DP per stage "
             "(checked); the plan's EDP copies are separate deployments."]
    ex.files["README.txt"] = _readme(p, ex, f"vLLM export of {p.name}", body,
                                     rank_map_text(p, split, placed))
    return ex


def _loss_short(p: ExportPlan, loads) -> str:
    if loads is None:
        lim = p.metrics.get("load_imbalance")
        return (f"plan hot/mean {1 + lim:.3f}; linear unknown without --instance"
                if isinstance(lim, (int, float)) else "loads unknown without --instance")
    e = p.experts
    plan = hot_over_mean(e.slots, e.ep, loads)
    lin = hot_over_mean(vllm_linear(e), e.ep, loads)
    return (f"worst-layer hot/mean: plan {max(plan.values()):.3f}, vLLM linear "
            f"{max(lin.values()):.3f}")


def vllm_loss_text(p: ExportPlan, loads) -> list[str]:
    e = p.experts
    lines = ["WHAT YOU LOSE: the plan's balanced expert placement. vLLM starts from its linear",
             f"  placement: EP rank r holds physical slots [r*{e.slots_per_rank}, (r+1)*"
             f"{e.slots_per_rank}) of [0..{e.num_experts - 1}"
             + (f", then 0..{e.redundant - 1} mod {e.num_experts}" if e.redundant else "")
             + "], the same in every layer."]
    if e.is_contiguous():
        return ["expert placement: the plan's placement is the contiguous one, which is vLLM's "
                "linear default: nothing is lost."]
    if loads is None:
        lim = p.metrics.get("load_imbalance")
        if isinstance(lim, (int, float)):
            lines.append(f"  the plan's hottest EP rank carries {1 + lim:.3f} x the mean load (worst "
                         "layer, plan metrics); vLLM's linear placement: give --instance to compute it.")
        else:
            lines.append("  expert loads unknown: give --instance to compare hot-rank loads.")
        return lines
    plan = hot_over_mean(e.slots, e.ep, loads)
    lin = hot_over_mean(vllm_linear(e), e.ep, loads)
    wp = max(plan, key=plan.get)
    wl = max(lin, key=lin.get)
    lines += [f"  hottest EP rank / mean load (from the instance's expert loads):",
              f"    plan placement : worst layer {wp} {plan[wp]:.3f}, mean over MoE layers "
              f"{sum(plan.values()) / len(plan):.3f}",
              f"    vLLM linear    : worst layer {wl} {lin[wl]:.3f}, mean over MoE layers "
              f"{sum(lin.values()) / len(lin):.3f}",
              "  the MoE step waits for the hottest rank: the worst layer's expert time grows by "
              f"about {max(lin.values()) / max(plan.values()):.2f}x"]
    lines.append("  EPLB (on: the replicas need it) rebalances from measured loads every "
                 "step_interval steps." if e.redundant else
                 "  --enable-eplb would let vLLM rebalance from measured loads at runtime "
                 "(not set: the plan has no redundant experts).")
    return lines


# ----------------------------------------------------------------------------------------------
# Megatron-Core


def megatron_pipeline_args(stages: tuple[tuple[int, ...], ...]) -> list[tuple[str, object]]:
    """Flags for the plan's layer split: none when even, first/last counts when the middle is
    even, else the --pipeline-model-parallel-layout string (E first, L last, t = layer)."""
    sizes = [len(s) for s in stages]
    pp = len(sizes)
    if pp == 1 or len(set(sizes)) == 1:
        return []
    if len(set(sizes[1:])) == 1:
        return [("--decoder-first-pipeline-num-layers", sizes[0])]
    if len(set(sizes[:-1])) == 1:
        return [("--decoder-last-pipeline-num-layers", sizes[-1])]
    if pp >= 3 and len(set(sizes[1:-1])) == 1:
        return [("--decoder-first-pipeline-num-layers", sizes[0]),
                ("--decoder-last-pipeline-num-layers", sizes[-1])]
    parts = []
    for j, n in enumerate(sizes):
        part = ("E" if j == 0 else "") + (f"t*{n}" if n > 1 else "t") + ("L" if j == pp - 1 else "")
        parts.append(part)
    return [("--pipeline-model-parallel-layout", _q("|".join(parts)))]


def _megatron_rule(g: GpuSlot, split: Split, p: ExportPlan) -> tuple[int, int]:
    d = p.deg
    in_stage = g.tp_rank + d.tp * g.dp_rank
    return in_stage + d.tp * d.dp * g.stage, (in_stage // d.etp) % d.ep


def export_megatron(p: ExportPlan, out_dir: Path) -> Export:
    d, e = p.deg, p.experts
    world = d.num_gpus
    if world % (d.tp * d.pp):
        raise InputError(f"megatron: world={world} not divisible by TP*PP={d.tp * d.pp}")
    if world % (d.etp * d.ep * d.pp):
        raise InputError(f"megatron: world={world} not divisible by ETP*EP*PP={d.etp * d.ep * d.pp}")
    if e.num_experts % d.ep:
        raise InputError(f"megatron: --num-experts {e.num_experts} is not divisible by "
                         f"--expert-model-parallel-size {d.ep}")
    split = Split(1, d.tp, d.dp, {g.rank: 0 for g in p.gpus}, {g.rank: g.dp_rank for g in p.gpus})
    placed = seats(p, split, _megatron_rule)
    warnings = seat_warnings(p, split, placed, "megatron")
    if e.redundant:
        warnings.append(f"Megatron-Core has no redundant experts: the plan's {e.redundant} "
                        f"replica slots are dropped, each EP rank holds {e.num_experts // d.ep} "
                        "experts")
    if not e.is_contiguous():
        warnings.append(f"the plan's expert placement is not Megatron's contiguous one (EP rank r "
                        f"owns experts [r*{e.num_experts // d.ep}, (r+1)*{e.num_experts // d.ep})): "
                        "Megatron will use contiguous blocks and lose the plan's balance")
    args: list[tuple[str, object | None]] = [
        ("--tensor-model-parallel-size", d.tp), ("--pipeline-model-parallel-size", d.pp),
        ("--expert-model-parallel-size", d.ep), ("--expert-tensor-parallel-size", d.etp),
        ("--num-layers", e.num_layers), ("--num-experts", e.num_experts)]
    if d.tp > 1:
        args.append(("--sequence-parallel", None))
    if e.dense_layers:
        pattern = [0 if layer in set(e.dense_layers) else 1 for layer in range(e.num_layers)]
        args.append(("--moe-layer-freq", _q(_run_pattern(pattern))))
    args += megatron_pipeline_args(p.stages)
    gpn = p.gpus_per_node
    nnodes = _multi_node(world, gpn)
    prog = ["torchrun", f"--nproc-per-node {min(world, gpn)}", f"--nnodes {nnodes}"]
    needs: tuple[str, ...] = ()
    if nnodes > 1:
        prog += ['--node-rank "$NODE_RANK"', '--master-addr "$HEAD_ADDR"', "--master-port 6000"]
        needs = ("NODE_RANK", "HEAD_ADDR")
    prog += ['"${MEGATRON_SCRIPT:-pretrain_gpt.py}"']
    args_text = "\n".join(f if v is None else f"{f} {v}" for f, v in args) + "\n"
    settings = {"tensor_model_parallel_size": d.tp, "pipeline_model_parallel_size": d.pp,
                "data_parallel_size": world // (d.tp * d.pp), "expert_model_parallel_size": d.ep,
                "expert_tensor_parallel_size": d.etp,
                "expert_data_parallel_size": world // (d.etp * d.ep * d.pp), "world_size": world}
    cmd = _command(prog, [(f, v) for f, v in args] + [('"$@"', None)])
    notes = list(p.notes) + node_fill_notes(world, gpn)
    notes.append("add your model, data and training flags; the parallel flags are in "
                 "megatron_args.txt")
    ex = Export("megatron", {}, [Launch(cmd)], {}, 1, world, settings, warnings, notes, needs)
    ex.files["megatron_args.txt"] = args_text
    ex.files["launch.sh"] = _launch_sh(ex, f"Megatron-Core launch for plan {p.name}")
    body = ["files:", "  megatron_args.txt  the parallelism and pipeline-split flags, one per line",
            "", "mapping: DP = world/(TP*PP); EDP = world/(ETP*EP*PP) (MoE parallel folding); rank "
            "order tp-cp-ep-dp-pp (the plan's layout); experts contiguous per EP rank."]
    ex.files["README.txt"] = _readme(p, ex, f"Megatron-Core export of {p.name}", body,
                                     rank_map_text(p, split, placed))
    return ex


def _run_pattern(pattern: list[int]) -> str:
    runs: list[tuple[int, int]] = []
    for x in pattern:
        if runs and runs[-1][0] == x:
            runs[-1] = (x, runs[-1][1] + 1)
        else:
            runs.append((x, 1))
    return "(" + "+".join(f"[{x}]*{n}" for x, n in runs) + ")"


# ----------------------------------------------------------------------------------------------
# CSV

CSV_COLUMNS = ("rank", "node", "local_gpu", "stage", "layers", "tp_rank", "dp_rank", "ep_rank",
               "etp_rank", "edp_rank", "experts_per_layer", "memory_gb_weights",
               "memory_gb_kv_cache", "memory_gb_activations", "memory_gb_buffers",
               "memory_gb_total")


def experts_compact(per_layer: dict[int, tuple[int, ...]]) -> str:
    """'L0-7:0-3,9; L8:1,2' -- runs of layers with the same slots, slots as ranges."""
    groups: list[tuple[list[int], tuple[int, ...]]] = []
    for layer in sorted(per_layer):
        slots = per_layer[layer]
        if groups and groups[-1][1] == slots and groups[-1][0][-1] == layer - 1:
            groups[-1][0].append(layer)
        else:
            groups.append(([layer], slots))
    return "; ".join(f"L{_ranges(layers)}:{_ranges(list(slots))}" for layers, slots in groups)


def parse_compact(text: str) -> dict[int, list[int]]:
    """Inverse of ``experts_compact``."""
    out: dict[int, list[int]] = {}
    for group in filter(None, (g.strip() for g in text.split(";"))):
        layers, slots = group[1:].split(":")
        ids = _unranges(slots)
        for layer in _unranges(layers):
            out[layer] = ids
    return out


def export_csv(p: ExportPlan, out_dir: Path) -> Export:
    rows = [",".join(CSV_COLUMNS)]
    for g in p.gpus:
        mem = p.memory.get(g.rank, {})
        layers = p.stages[g.stage]
        cells = [g.rank, g.node, g.local_rank, g.stage, _ranges(list(layers)), g.tp_rank,
                 g.dp_rank, g.ep_rank, g.etp_rank, g.edp_rank,
                 '"' + experts_compact(p.gpu_experts(g)) + '"']
        cells += [_num(mem.get(k)) for k in ("weights", "kv_cache", "activations", "buffers", "total")]
        rows.append(",".join(str(c) for c in cells))
    ex = Export("csv", {"gpus.csv": "\n".join(rows) + "\n"}, [], {}, 1, len(p.gpus), {}, [],
                list(p.notes))
    return ex


def _num(x: object) -> str:
    return "" if not isinstance(x, (int, float)) else f"{x:.3f}"


# ----------------------------------------------------------------------------------------------
# Helpers, dispatch


def _ranges(xs: list[int]) -> str:
    """[0,1,2,5,7,8] -> '0-2,5,7-8' (runs of +1 steps; repeats kept)."""
    if not xs:
        return ""
    parts = []
    start = prev = xs[0]
    for x in list(xs[1:]) + [None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ",".join(parts)


def _unranges(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def export(p: ExportPlan, fmt: str, out_dir: Path, loads=None) -> Export:
    if fmt == "sglang":
        return export_sglang(p, out_dir)
    if fmt == "vllm":
        return export_vllm(p, out_dir, loads)
    if fmt == "trtllm":
        return export_trtllm(p, out_dir)
    if fmt == "megatron":
        return export_megatron(p, out_dir)
    if fmt == "csv":
        return export_csv(p, out_dir)
    raise InputError(f"--to={fmt!r}: expected one of {', '.join(FORMATS)}")


def write_export(ex: Export, out_dir: Path) -> list[Path]:
    """Write every file atomically; launch.sh becomes executable."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output {out_dir}: exists and is not a directory")
    mask = os.umask(0)
    os.umask(mask)
    written = []
    for name, text in ex.files.items():
        path = out_dir / name
        write_atomic(path, text)
        # write_atomic leaves mkstemp's 0600; runtimes often run as another user
        os.chmod(path, (0o777 if name.endswith(".sh") else 0o666) & ~mask)
        written.append(path)
    return written
