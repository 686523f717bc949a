"""The rules of the ONE plan reader (``optimizer.plan.files.read_plan``): each optional field
filled by one rule, each inconsistency a ``Problem`` naming the check rule it breaks (see
docs/plan-file.md). Works with or without an instance.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from optimizer.costs.layout import Degrees, GpuSlot, megatron_layout
from optimizer.errors import InputError
from optimizer.inputs.names import check_result_name
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Plan

MAX_PLAN_GPUS = 65536            # the schema's hardware.num_gpus limit: export and report cap here
MAX_PLAN_CELLS = 1 << 24         # layers x expert slots per layer: what an export may write
MAX_GPUS_PER_NODE = 4096         # a plan's local ranks (no instance) stay below this
DEFAULT_GPUS_PER_NODE = 8        # assumed when neither the plan nor an instance says

# the check rules a structural problem breaks (names as ``moeopt check`` prints them)
RULE_GPUS = "tp*pp*dp == num_gpus"
RULE_FOLDING = "etp*ep*edp == tp*dp (parallel folding)"
RULE_STAGES = "stages_contiguous_all_layers_once"
RULE_PLACEMENT = "expert_placement_each_expert_once_equal_slots"
RULE_LAYOUT = "gpus_match_degrees"

# ----------------------------------------------------------------------------------------------
# What the reader returns


@dataclass(frozen=True)
class Problem:
    """One inconsistency: the check rule it breaks and a one-line reason."""

    rule: str
    message: str


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

    def ranks(self, layer: int) -> tuple[tuple[int, ...], ...]:
        """The layer's slots per EP rank, ``[ep_rank] -> logical ids``."""
        return tuple(self.rank_slots(layer, r) for r in range(self.ep))

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
class PlanData:
    """A plan with every optional field filled in; ``name`` is a ResultName."""

    name: str
    source: str
    deg: Degrees
    stages: tuple[tuple[int, ...], ...]
    experts: ExpertMap
    gpus: tuple[GpuSlot, ...]            # sorted by rank
    memory: dict[int, dict]              # rank -> stated memory_gb parts (may be empty)
    gpus_per_node: int
    metrics: dict
    file: BaseModel                      # the optimizer.plan.files.PlanFile read
    notes: tuple[str, ...] = ()          # remarks made while reading the plan
    moe_token_exchange: str = "deepep"   # the MoE token exchange the plan's costs assume

    @property
    def num_layers(self) -> int:
        return self.experts.num_layers

    def gpu_experts(self, gpu: GpuSlot) -> dict[int, tuple[int, ...]]:
        """MoE layer -> the physical slots (logical ids) the plan gives this GPU."""
        return {layer: self.experts.rank_slots(layer, gpu.ep_rank)
                for layer in self.stages[gpu.stage] if layer in self.experts.slots}

    def to_plan(self) -> Plan:
        """The evaluator's Plan (placement sorted per rank)."""
        placement = {layer: tuple(tuple(sorted(r)) for r in self.experts.ranks(layer))
                     for layer in self.experts.moe_layers}
        return Plan(self.name, self.deg, self.stages, placement, self.gpus)


class _Stop(Exception):
    """Reading cannot go on (the problem is already recorded)."""


@dataclass
class _Reading:
    f: BaseModel                         # a PlanFile (not imported: no cycle)
    inst: Instance | None
    what: str
    partial: bool = False
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reached: set[str] = field(default_factory=set)   # structure rules the reading got to

    def fail(self, rule: str, message: str, fatal: bool = True) -> None:
        self.problems.append(Problem(rule, f"{self.what}: {message}"))
        if fatal:
            raise _Stop


# ----------------------------------------------------------------------------------------------
# Reading


def read(f: BaseModel, inst: Instance | None = None, source: str = "(in memory)",
         cap_gpus: bool = True, partial: bool = False) -> tuple[PlanData | None, list[Problem]]:
    """The plan with every rule applied, or None and the problems found. A rule the reading
    could not get to (an earlier problem stopped it) counts as a problem too.
    ``cap_gpus``: more than MAX_PLAN_GPUS GPUs is an InputError (export, report).
    ``partial`` (the report): a plan that says neither its layers nor its experts is read with
    no stages (``()``) or no experts (an ExpertMap without MoE layers) instead of refused."""
    r = _Reading(f, inst, f"plan {source}", partial)
    try:
        deg = _degrees(r, cap_gpus)
        num_layers = _num_layers(r)
        stages = _stages(r, deg, num_layers)
        experts = _expert_map(r, deg, num_layers)
        gpn = _gpus_per_node(r)
        gpus = _gpus(r, deg, gpn)
    except _Stop:
        pass
    if r.problems:
        unread = [Problem(rule, f"{r.what}: not checked (an earlier problem)")
                  for rule in (RULE_STAGES, RULE_PLACEMENT, RULE_LAYOUT) if rule not in r.reached]
        return None, r.problems + unread
    memory = {g.rank: g.memory_gb.model_dump(exclude_none=True) for g in f.gpus or []
              if g.memory_gb is not None}
    name = f.instance or (inst.name if inst is not None and _is_result_name(inst.name)
                          else _stem_name(source))
    if inst is not None and f.instance and f.instance != inst.name:
        r.notes.append(f"the plan names instance {f.instance!r}, --instance is {inst.name!r}")
    exchange = _moe_token_exchange(r)
    data = PlanData(name, source, deg, stages, experts, gpus, memory, gpn, dict(f.metrics or {}),
                    f, tuple(r.notes), exchange)
    return data, []


def _moe_token_exchange(r: _Reading) -> str:
    """The plan's ``moe_token_exchange``; absent: the instance's ``hardware.moe_token_exchange``,
    else "deepep". A plan and an instance that disagree get a note (the plan's wins)."""
    stated = getattr(r.f, "moe_token_exchange", None)
    given = r.inst.hardware.moe_token_exchange if r.inst is not None else None
    if stated and given and stated != given:
        r.notes.append(f"the plan was priced with moe_token_exchange={stated!r}, the instance says "
                       f"{given!r}")
    return stated or given or "deepep"


def printable(text: str) -> str:
    """``text`` with every control character (newline, escape, ...) written as an escape, so
    that free text from a file prints as one line and cannot drive a terminal."""
    return "".join(ch if unicodedata.category(ch)[0] != "C" else ch.encode("unicode_escape").decode()
                   for ch in text)


def _is_result_name(name: str) -> bool:
    try:
        check_result_name(name)
    except ValueError:
        return False
    return True


def _stem_name(source: str) -> str:
    stem = Path(source).stem
    try:
        return check_result_name(stem)
    except ValueError:
        return "plan"


def _degrees(r: _Reading, cap_gpus: bool) -> Degrees:
    f = r.f
    d = f.degrees
    per_stage = d.tp * d.dp
    etp = d.etp or 1
    edp = d.edp
    if edp is None:
        if per_stage % (etp * d.ep):
            r.fail(RULE_FOLDING, f"degrees: etp*ep={etp * d.ep} does not divide tp*dp={per_stage}")
        edp = per_stage // (etp * d.ep)
    deg = Degrees(d.tp, d.pp, d.dp, d.ep, etp, edp, f.micro_batches)
    if cap_gpus and deg.num_gpus > MAX_PLAN_GPUS:
        raise InputError(f"{r.what}: degrees: tp*pp*dp={deg.num_gpus} GPUs: more than the cap of "
                         f"{MAX_PLAN_GPUS} GPUs")
    if etp * d.ep * edp != per_stage:
        r.fail(RULE_FOLDING, f"degrees: etp*ep*edp={etp * d.ep * edp} != tp*dp={per_stage} "
               "(MoE parallel folding needs the same GPUs per stage)", fatal=False)
    if f.num_gpus is not None and f.num_gpus != deg.num_gpus:
        r.fail(RULE_GPUS, f"num_gpus={f.num_gpus} != tp*pp*dp={deg.num_gpus}", fatal=False)
    if r.inst is not None and deg.num_gpus > r.inst.hardware.num_gpus:
        r.fail("num_gpus <= hardware.num_gpus", f"degrees: tp*pp*dp={deg.num_gpus} GPUs, the "
               f"instance has hardware.num_gpus={r.inst.hardware.num_gpus}")
    if any(p.rule == RULE_FOLDING for p in r.problems):
        raise _Stop  # no layout to read against
    return deg


def _num_layers(r: _Reading) -> int:
    f = r.f
    from_stages = sum(len(s.layers) for s in f.stages) if f.stages is not None else None
    if r.inst is not None:
        n = r.inst.model.num_layers
        if from_stages is not None and from_stages != n:
            r.fail(RULE_STAGES, f"stages hold {from_stages} layers, the instance has "
                   f"model.num_layers={n}")
        return n
    seen = list(f.dense_layers or [])
    seen = [x + 1 for x in seen]
    if f.stages is not None:
        seen += [from_stages] + [max(s.layers) + 1 for s in f.stages if s.layers]
    elif f.expert_placement:
        seen += [int(k) + 1 for k in f.expert_placement if k.strip().isdigit() and len(k) < 9]
    if not seen:
        if r.partial:
            r.notes.append("the plan says neither its stages nor its expert placement: no layers shown")
            return 0
        raise InputError(f"{r.what}: no stages and no expert_placement: give --instance to know "
                         "the layers")
    return max(seen)   # a layer a stage misses is then reported as such


def even_stages(num_layers: int, pp: int) -> tuple[tuple[int, ...], ...]:
    """Contiguous split with the first ``num_layers % pp`` stages one layer longer."""
    base, extra = divmod(num_layers, pp)
    out, start = [], 0
    for j in range(pp):
        size = base + (1 if j < extra else 0)
        out.append(tuple(range(start, start + size)))
        start += size
    return tuple(out)


def _stages(r: _Reading, deg: Degrees, num_layers: int) -> tuple[tuple[int, ...], ...]:
    r.reached.add(RULE_STAGES)
    if num_layers == 0:    # a partial reading that knows no layers
        return ()
    if deg.pp > num_layers:
        r.fail(RULE_STAGES, f"degrees.pp={deg.pp} > {num_layers} layers: a stage would be empty")
    if r.f.stages is None:
        return even_stages(num_layers, deg.pp)
    ordered = sorted(r.f.stages, key=lambda s: s.stage)
    numbers = [s.stage for s in ordered]
    if numbers != list(range(deg.pp)):
        shown = numbers if len(numbers) <= 8 else numbers[:8] + ["..."]
        r.fail(RULE_STAGES, f"stages: stage numbers {shown} are not 0..{deg.pp - 1} (pp={deg.pp})")
    stages = tuple(tuple(s.layers) for s in ordered)
    flat = [layer for s in stages for layer in s]
    if flat != list(range(num_layers)) or not all(stages):
        r.fail(RULE_STAGES, "stages: layers must be contiguous, non-empty per stage and "
               f"cover 0..{num_layers - 1} once each")
    return stages


def _dense(r: _Reading, num_layers: int) -> set[int]:
    """Dense layers: the instance's non-MoE layers, else the plan's ``dense_layers``."""
    stated = r.f.dense_layers
    if stated is not None and any(x >= num_layers for x in stated):
        r.fail(RULE_PLACEMENT, f"dense_layers must be layer indices in 0..{num_layers - 1}")
    if r.inst is None:
        return set(stated or [])
    dense = set(range(num_layers)) - set(r.inst.model.moe_layer_ids)
    if stated is not None and set(stated) != dense:
        r.fail(RULE_PLACEMENT, f"dense_layers={ranges(sorted(set(stated)))} but the instance's "
               f"dense layers are [{ranges(sorted(dense))}]")
    return dense


def _expert_map(r: _Reading, deg: Degrees, num_layers: int) -> ExpertMap:
    f = r.f
    r.reached.add(RULE_PLACEMENT)
    dense = _dense(r, num_layers)
    e_doc, r_doc = f.num_experts, f.redundant_experts
    e_inst = r.inst.model.num_experts if r.inst is not None else None
    if e_doc is not None and e_inst is not None and e_doc != e_inst:
        r.fail(RULE_PLACEMENT, f"num_experts={e_doc} but the instance has model.num_experts={e_inst}")
    if f.expert_placement is None:
        _cap_cells(r, num_layers, e_inst or e_doc or 0)
        return _contiguous(r, deg, num_layers, dense, e_inst or e_doc)
    slots = _placement_rows(r, deg, num_layers, dense)
    width = len(next(iter(slots.values()))) // deg.ep
    num_slots = deg.ep * width
    _cap_cells(r, num_layers, num_slots)
    top = max(max(row) for row in slots.values()) + 1
    experts = e_inst or e_doc or (num_slots - r_doc if r_doc is not None else top)
    if experts < 1:
        r.fail(RULE_PLACEMENT, f"redundant_experts={r_doc} leaves no logical experts in "
               f"{num_slots} slots")
    redundant = num_slots - experts
    if redundant < 0:
        r.fail(RULE_PLACEMENT, f"{num_slots} slots per layer cannot hold {experts} experts")
    if r_doc is not None and r_doc != redundant:
        r.fail(RULE_PLACEMENT, f"redundant_experts={r_doc} but {num_slots} slots - {experts} "
               f"experts = {redundant}")
    if top > experts:
        r.fail(RULE_PLACEMENT, f"expert_placement uses expert id {top - 1}, the model has "
               f"{experts} experts (ids 0..{experts - 1})")
    for layer, row in slots.items():
        if len(set(row)) != experts:
            missing = sorted(set(range(experts)) - set(row))
            r.fail(RULE_PLACEMENT, f"expert_placement[{layer}] misses expert(s) "
                   f"{ranges(missing[:20])}: every expert needs at least one slot")
    if redundant and r_doc is None:
        r.notes.append(f"{redundant} redundant slots inferred ({num_slots} slots, {experts} experts)")
    missing_layers = [x for x in range(num_layers) if x not in slots and x not in dense]
    if missing_layers:
        if r.inst is not None:
            r.fail(RULE_PLACEMENT, f"expert_placement has no entry for MoE layer(s) "
                   f"{ranges(missing_layers)} of the instance")
        r.notes.append(f"layer(s) {ranges(missing_layers)} have no expert_placement: exported as "
                       "dense layers (no MoE)")
    return ExpertMap(num_layers, experts, deg.ep, slots)


def _cap_cells(r: _Reading, num_layers: int, num_slots: int) -> None:
    if num_layers * num_slots > MAX_PLAN_CELLS:
        raise InputError(f"{r.what}: {num_layers} layers x {num_slots} expert slots = "
                         f"{num_layers * num_slots}: more than the cap of {MAX_PLAN_CELLS}")


def _contiguous(r: _Reading, deg: Degrees, num_layers: int, dense: set[int],
                experts: int | None) -> ExpertMap:
    if experts is None and r.partial:
        r.notes.append("the plan gives neither an expert placement nor num_experts: no experts shown")
        return ExpertMap(num_layers, 0, deg.ep, {})
    if experts is None:
        raise InputError(f"{r.what}: no expert_placement and no num_experts: give --instance "
                         "to export the runtimes' contiguous placement")
    if r.f.redundant_experts:
        r.fail(RULE_PLACEMENT, f"redundant_experts={r.f.redundant_experts} needs an "
               "expert_placement that says where the replicas go")
    if experts % deg.ep:
        r.fail(RULE_PLACEMENT, f"ep={deg.ep} does not divide num_experts={experts}")
    r.notes.append("the plan has no expert_placement: contiguous blocks per EP rank")
    row = tuple(range(experts))
    return ExpertMap(num_layers, experts, deg.ep,
                     {layer: row for layer in range(num_layers) if layer not in dense})


def _placement_rows(r: _Reading, deg: Degrees, num_layers: int,
                    dense: set[int]) -> dict[int, tuple[int, ...]]:
    """MoE layer -> its slots (ranks concatenated), every rank and layer the same width."""
    slots: dict[int, tuple[int, ...]] = {}
    width = None
    for key, ranks in r.f.expert_placement.items():
        if not key.isdigit() or len(key) > 8 or str(int(key)) != key or int(key) >= num_layers:
            r.fail(RULE_PLACEMENT, f"expert_placement key {key[:40]!r} is not a layer in "
                   f"0..{num_layers - 1}")
        layer = int(key)
        if layer in dense:
            r.fail(RULE_PLACEMENT, f"layer {layer} is dense and has an expert_placement")
        if len(ranks) != deg.ep:
            r.fail(RULE_PLACEMENT, f"expert_placement[{key}] has {len(ranks)} EP ranks, "
                   f"degrees.ep={deg.ep}")
        sizes = {len(x) for x in ranks}
        if len(sizes) != 1 or 0 in sizes:
            r.fail(RULE_PLACEMENT, f"expert_placement[{key}]: EP ranks hold {sorted(sizes)} slots; "
                   "every rank must hold the same number (>= 1)")
        size = sizes.pop()
        if width is not None and size != width:
            r.fail(RULE_PLACEMENT, f"expert_placement[{key}] has {size} slots per rank, other "
                   f"layers {width}: one slot count for all layers")
        width = size
        slots[layer] = tuple(x for rank in ranks for x in rank)
    if not slots:
        r.fail(RULE_PLACEMENT, "expert_placement is empty")
    return slots


def _gpus_per_node(r: _Reading) -> int:
    if r.inst is not None:
        return r.inst.hardware.gpus_per_node
    gpus = r.f.gpus
    if gpus:
        if all(g.local_rank is not None for g in gpus):
            gpn = max(g.local_rank for g in gpus) + 1
            if gpn > MAX_GPUS_PER_NODE:
                raise InputError(f"{r.what}: gpus: local_rank {gpn - 1}: more than the cap of "
                                 f"{MAX_GPUS_PER_NODE} GPUs per node")
            return gpn
        per_node: dict[int, int] = {}
        for g in gpus:
            per_node[g.node] = per_node.get(g.node, 0) + 1
        return max(per_node.values())
    r.notes.append(f"no gpus list and no --instance: assumed {DEFAULT_GPUS_PER_NODE} GPUs per node")
    return DEFAULT_GPUS_PER_NODE


def _gpus(r: _Reading, deg: Degrees, gpn: int) -> tuple[GpuSlot, ...]:
    r.reached.add(RULE_LAYOUT)
    if r.f.gpus is not None and len(r.f.gpus) != deg.num_gpus:
        r.fail(RULE_LAYOUT, f"gpus: {len(r.f.gpus)} GPUs listed, tp*pp*dp={deg.num_gpus}")
    default = megatron_layout(deg, gpn)
    if r.f.gpus is None:
        return default
    base = {s.rank: s for s in default}
    out = []
    for g in r.f.gpus:
        b = base.get(g.rank)
        out.append(GpuSlot(g.rank, g.node, g.local_rank if g.local_rank is not None else g.rank % gpn,
                           g.stage, g.tp_rank, g.dp_rank, g.ep_rank,
                           g.etp_rank if g.etp_rank is not None else (b.etp_rank if b else 0),
                           g.edp_rank if g.edp_rank is not None else (b.edp_rank if b else 0)))
    out.sort(key=lambda s: s.rank)
    if [s.rank for s in out] != list(range(deg.num_gpus)):
        r.fail(RULE_LAYOUT, f"gpus: ranks must be 0..{deg.num_gpus - 1} once each")
    for s in out:
        if not (s.stage < deg.pp and s.tp_rank < deg.tp and s.dp_rank < deg.dp and s.ep_rank < deg.ep
                and s.etp_rank < deg.etp and s.edp_rank < deg.edp):
            r.fail(RULE_LAYOUT, f"gpus: rank {s.rank} has a group rank outside the degrees")
    if len({(s.stage, s.tp_rank, s.dp_rank) for s in out}) != len(out):
        r.fail(RULE_LAYOUT, "gpus: two GPUs share (stage, tp_rank, dp_rank)")
    if len({(s.stage, s.etp_rank, s.ep_rank, s.edp_rank) for s in out}) != len(out):
        r.fail(RULE_LAYOUT, "gpus: two GPUs share (stage, etp_rank, ep_rank, edp_rank)")
    seats: set[tuple[int, int]] = set()
    for s in out:
        if s.local_rank >= gpn or (s.node, s.local_rank) in seats:
            r.fail(RULE_LAYOUT, f"gpus: rank {s.rank} has local_rank {s.local_rank} on node "
                   f"{s.node}: taken, or not below {gpn} GPUs per node")
        seats.add((s.node, s.local_rank))
    return tuple(out)


def ranges(xs: list[int]) -> str:
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

