"""``moeopt report``: one self-contained HTML page with pictures and tables of a plan.

Data flow: plan JSON (+ instance) -> ``collect`` (a ``ReportData``: the plan's own figures,
plus the recomputed evaluation and expert loads when an instance is given) -> ``pictures``
(matplotlib figures on the Agg canvas) -> ``page_html`` (renders each figure to a base64 PNG,
adds the tables) -> ``render_report`` / ``write_report`` (``write_atomic``).

Nothing in the page points outside it: no scripts, links, fonts or external images. Every
text that comes from a file is escaped with ``html.escape``. Large maps collapse into heat
maps and tick labels are thinned until they no longer overlap (checked on the drawn figure).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.lines
import PIL.Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, MaxNLocator
from pydantic import ValidationError

from optimizer.errors import InputError
from optimizer.plan.evaluate import RELATION, Check, Evaluation, evaluate
from optimizer.inputs.files import validation_message, write_atomic
from optimizer.costs.layout import Degrees, GpuSlot, megatron_layout
from optimizer.costs.expert_loads import expert_loads
from optimizer.plan.files import PlanFile, plan_from_file
from optimizer.inputs.schema import Instance
from optimizer.costs.units import LOAD_SCALE, bytes_to_gb

DPI = 100
WIDTH_IN = 11.0
MAX_GPUS = 65536                 # the schema's hardware.num_gpus limit
LABELLED_CELLS = 256             # cluster maps with more GPUs collapse into a heat map
MIN_LABEL_PT = 5.5               # ... and so do maps whose cell labels would be smaller
MAX_LEGEND = 16                  # stages named in the cluster map's legend
MAX_MAP_CELLS = 4_000_000        # layers x experts beyond which no placement map is drawn
DEFAULT_GPUS_PER_NODE = 8        # assumed when neither the plan nor an instance says
MEMORY_PARTS = ("weights", "kv_cache", "activations", "buffers")
TABLE_FILES = ("sweep.csv", "pareto.csv")
CLAIM_TOLERANCE = 0.01           # a stated metric "holds" within 1 % of the recomputed one
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
      "font.family": "DejaVu Sans", "svg.fonttype": "path"}


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


@dataclass
class Picture:
    """One figure with its one-line caption, or only a line saying why there is none."""

    anchor: str
    title: str
    caption: str
    fig: Figure | None = None


# ---------------------------------------------------------------- collecting the data

def collect(inst: Instance | None, doc: dict) -> ReportData:
    """Validate the plan (structure only) and gather what the pictures need."""
    if not isinstance(doc, dict):
        raise InputError(f"plan: expected a JSON object, got {type(doc).__name__}")
    if doc.get("status") in ("infeasible", "unknown") and "degrees" not in doc:
        why = doc.get("explanation") or "no deployment found"
        raise InputError(f"plan: status={doc['status']!r}: there is no deployment to report ({why})")
    try:
        pf = PlanFile.model_validate(doc)
    except ValidationError as exc:
        raise InputError(validation_message("plan", exc)) from None
    deg = _degrees(pf)
    name = inst.name if inst else str(pf.instance or "")
    data = ReportData(doc, name, deg, (), {}, None, inst)
    if inst is not None and pf.instance not in (None, inst.name):
        data.notes.append(f"the plan names instance {pf.instance!r} but the instance given is "
                          f"{inst.name!r}")
    plan = None
    if inst is not None:
        plan, data.structure = plan_from_file(inst, pf)
        if plan is None:
            bad = ", ".join(c.name for c in data.structure if not c.ok)
            data.notes.append(f"the plan does not fit instance {inst.name!r} ({bad}); loads, "
                              "requirements and recomputed figures are left out")
    if plan is not None:
        data.ev = evaluate(inst, plan)
        data.slots = plan.slots
        placed = (plan.placement.items() if isinstance(plan.placement, dict)
                  else enumerate(plan.placement))
        data.placement = {layer: [list(r) for r in ranks] for layer, ranks in sorted(placed)}
        moe_ids = getattr(inst.model, "moe_layer_ids", range(inst.model.num_layers))
        data.loads = dict(zip(moe_ids, expert_loads(inst)))  # expert_loads: MoE layers in order
        data.stages = [(j, list(layers)) for j, layers in enumerate(plan.stages)]
        if pf.gpus is None:
            data.notes.append("the plan lists no GPUs: Megatron's default rank order is shown")
        if pf.expert_placement is None:
            data.notes.append("the plan gives no expert placement: contiguous blocks are shown")
    else:
        data.slots = _plan_slots(pf, deg, inst, data.notes)
        data.placement = _plan_placement(pf)
        data.stages = _doc_stages(doc)
    data.memory = _memory(doc, data)
    return data


def _degrees(pf: PlanFile) -> Degrees:
    d = pf.degrees
    etp = d.etp or 1
    per_stage = d.tp * d.dp
    edp = d.edp or max(1, per_stage // (etp * d.ep))
    deg = Degrees(d.tp, d.pp, d.dp, d.ep, etp, edp, pf.micro_batches)
    if deg.num_gpus > MAX_GPUS:
        raise InputError(f"plan: degrees tp*pp*dp={deg.num_gpus}: more than {MAX_GPUS} GPUs")
    return deg


def _plan_slots(pf: PlanFile, deg: Degrees, inst: Instance | None,
                notes: list[str]) -> tuple[GpuSlot, ...]:
    """The plan's own GPU list, else Megatron's order (instance's GPUs per node, else 8)."""
    gpn = inst.hardware.gpus_per_node if inst else DEFAULT_GPUS_PER_NODE
    if not pf.gpus:
        notes.append("the plan lists no GPUs: Megatron's default rank order with "
                     f"{gpn} GPUs per node is shown")
        return megatron_layout(deg, gpn)
    if len(pf.gpus) > MAX_GPUS or any((g.local_rank or 0) >= 4096 or g.stage >= 4096 for g in pf.gpus):
        raise InputError(f"plan: gpus: more than {MAX_GPUS} GPUs, or a local_rank or stage above 4095")
    slots = (GpuSlot(g.rank, g.node, g.local_rank if g.local_rank is not None else g.rank % gpn,
                     g.stage, g.tp_rank, g.dp_rank, g.ep_rank, g.etp_rank or 0, g.edp_rank or 0)
             for g in pf.gpus)
    return tuple(sorted(slots, key=lambda s: s.rank))


def _plan_placement(pf: PlanFile) -> dict[int, list[list[int]]]:
    out = {}
    for key, ranks in (pf.expert_placement or {}).items():
        if not key.isdigit():
            raise InputError(f"plan: expert_placement key {key!r}: must be a layer index")
        out[int(key)] = [list(r) for r in ranks]
    return dict(sorted(out.items()))


def _memory(doc: dict, data: ReportData) -> list[tuple[float, float, float, float]] | None:
    """GB per GPU and part, from the plan's ``gpus`` list, else from the evaluation."""
    by_rank = {}
    for g in doc.get("gpus") or []:
        mem = g.get("memory_gb") if isinstance(g, dict) else None
        if isinstance(mem, dict) and all(_is_number(mem.get(k)) for k in MEMORY_PARTS):
            by_rank[g.get("rank")] = tuple(float(mem[k]) for k in MEMORY_PARTS)
    if data.slots and all(s.rank in by_rank for s in data.slots):
        data.memory_source = "as the plan states"
        return [by_rank[s.rank] for s in data.slots]
    if data.ev is not None:
        data.memory_source = "recomputed from the instance"
        parts = [tuple(bytes_to_gb(getattr(m, k)) for k in MEMORY_PARTS) for m in data.ev.stage_memory]
        return [parts[s.stage] for s in data.slots]
    return None


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


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


# ---------------------------------------------------------------- figure helpers

def _figure(height_in: float) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, min(max(height_in, 2.2), 14.0)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _overlap(boxes: list, pad: float = 1.0) -> bool:
    """True when two of the boxes (matplotlib Bbox) intersect."""
    boxes = sorted(boxes, key=lambda b: b.x0)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b.x0 >= a.x1 + pad:
                break
            if b.y0 < a.y1 + pad and a.y0 < b.y1 + pad:
                return True
    return False


def tick_boxes(fig: Figure) -> list[list]:
    """Per axis of every axes, the window boxes of its visible, non-empty tick labels."""
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            out.append([t.get_window_extent(renderer) for t in labels
                        if t.get_visible() and t.get_text()])
    return out


def _fit_ticks(fig: Figure, specs: list[tuple]) -> None:
    """Label each (ax, axis, positions, labels) every 1st, 2nd, 5th, 10th... position, the
    step estimated from the room the axis has (``png_base64`` then checks the drawing)."""
    for ax, axis, pos, labels in specs:
        room = (ax.get_position().width * fig.get_figwidth() if axis == "x"
                else ax.get_position().height * fig.get_figheight()) * DPI * 0.8
        size = max((len(s) for s in labels), default=1) * 6.0 + 8 if axis == "x" else 14.0
        step = _next_step(0, math.ceil(len(pos) * size / max(room, 1.0)))
        keep = range(0, len(pos), step)
        setter = ax.set_xticks if axis == "x" else ax.set_yticks
        setter([pos[i] for i in keep], [labels[i] for i in keep])


def png_base64(fig: Figure) -> str:
    """Render the figure on the Agg canvas, halving the tick labels of every axis (colour
    bars included) whose labels overlap until none do, and return the PNG as base64."""
    for _ in range(12):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        crowded = False
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                texts = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
                if len(texts) > 1 and _overlap([t.get_window_extent(renderer) for t in texts]):
                    _halve(axis)
                    crowded = True
        if not crowded:
            break
    rgba = fig.canvas.buffer_rgba()
    image = PIL.Image.frombuffer("RGBA", (rgba.shape[1], rgba.shape[0]), rgba, "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _halve(axis) -> None:
    locs = list(axis.get_ticklocs())
    if isinstance(axis.get_major_locator(), FixedLocator):
        labels = [t.get_text() for t in axis.get_ticklabels()]
        axis.set_ticks(locs[::2], labels[::2] if len(labels) == len(locs) else None)
    else:
        axis.set_major_locator(MaxNLocator(max(1, len(locs) // 2 - 1)))


def _next_step(current: int, at_least: int) -> int:
    """Smallest step of 1, 2, 5, 10, 20, 50, ... above ``current`` and >= ``at_least``."""
    base = 1
    while True:
        for m in (1, 2, 5):
            if base * m > current and base * m >= at_least:
                return base * m
        base *= 10


def _out_of_layout(artists) -> None:
    """Bars stay inside their axes: leave them out of the layout's bounding boxes (faster)."""
    for artist in artists:
        artist.set_in_layout(False)


def _categorical(n: int) -> ListedColormap:
    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"
    cmap = matplotlib.colormaps[name]
    if n <= 20:
        return ListedColormap(cmap.colors[:n])
    return ListedColormap(cmap([i / max(n - 1, 1) for i in range(n)]))


def _range_text(layers: list[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


def _doc_stages(doc: dict) -> list[tuple[int, list[int]]]:
    """The plan's ``stages`` list as (stage, layers), skipping malformed entries."""
    stages = doc.get("stages") if isinstance(doc.get("stages"), list) else []
    return sorted((s["stage"], list(s["layers"])) for s in stages
                  if isinstance(s, dict) and isinstance(s.get("stage"), int)
                  and isinstance(s.get("layers"), list) and s["layers"])


# ---------------------------------------------------------------- pictures

def pictures(data: ReportData, results_dir: str | Path = "results") -> list[Picture]:
    """Every picture of the page, in page order."""
    with matplotlib.rc_context(RC):
        out = [cluster_map(data), placement_map(data), memory_bars(data), load_map(data),
               requirement_bars(data)]
        out += pareto_plots(data, results_dir)
    return out


def _experts_label(data: ReportData, ep_rank: int) -> str:
    sets = {tuple(ranks[ep_rank]) for ranks in data.placement.values() if ep_rank < len(ranks)}
    if not sets:
        return ""
    if len(sets) == 1:
        (only,) = sets
        return "E " + ",".join(map(str, only)) if len(only) <= 3 else f"{len(only)} experts/layer"
    sizes = {len(s) for s in sets}
    return f"{sizes.pop()} experts/layer" if len(sizes) == 1 else "experts vary"


def cluster_map(data: ReportData) -> Picture:
    """Nodes as rows, GPUs as cells coloured by pipeline stage; labelled while they fit."""
    slots = data.slots
    nodes = sorted({s.node for s in slots})
    row_of = {n: i for i, n in enumerate(nodes)}
    cols = max(max(s.local_rank for s in slots) + 1, 1)
    fs = min(8.0, (WIDTH_IN * 0.85 * DPI / cols) / 16 / 0.62 * 72 / DPI)  # 16 characters a cell
    labelled = len(slots) <= LABELLED_CELLS and fs >= MIN_LABEL_PT and len(nodes) <= 32
    cell_h = 0.72 if labelled else min(0.35, 9.0 / len(nodes))
    fig = _figure(len(nodes) * cell_h + 1.3)
    ax = fig.add_subplot()
    grid = [[math.nan] * cols for _ in nodes]
    for s in slots:
        grid[row_of[s.node]][s.local_rank] = s.stage
    pp = max(data.deg.pp, max(s.stage for s in slots) + 1)
    cmap = _categorical(pp)
    ax.imshow(grid, cmap=cmap, norm=BoundaryNorm([x - 0.5 for x in range(pp + 1)], pp),
              aspect="auto", interpolation="nearest")
    ax.set_xlabel("GPU in node (local rank)")
    ax.set_ylabel("node")
    stage_layers = dict(data.stages)
    handles = [Patch(color=cmap(j), label=f"stage {j}" + (f": layers {_range_text(stage_layers[j])}"
                                                          if j in stage_layers else ""))
               for j in range(min(pp, MAX_LEGEND))]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
    if labelled:
        ax.set_xticks(range(cols), [str(c) for c in range(cols)])
        ax.set_yticks(range(len(nodes)), [f"node {n}" for n in nodes])
        for s in slots:
            etp = f" ETP{s.etp_rank}" if data.deg.etp > 1 else ""
            text = (f"GPU {s.rank}\nTP{s.tp_rank} DP{s.dp_rank}\nEP{s.ep_rank}{etp}\n"
                    + _experts_label(data, s.ep_rank))
            ax.text(s.local_rank, row_of[s.node], text.rstrip(), ha="center", va="center",
                    fontsize=fs, linespacing=1.1, in_layout=False)
        ax.set_xticks([x + 0.5 for x in range(cols - 1)], minor=True)
        ax.set_yticks([y + 0.5 for y in range(len(nodes) - 1)], minor=True)
        ax.grid(which="minor", color="white", linewidth=2)
        ax.tick_params(which="minor", length=0)
        caption = (f"{len(slots)} GPUs on {len(nodes)} node(s), coloured by pipeline stage; each cell: "
                   "global rank, TP/DP/EP ranks and the experts it holds (per layer in the table below).")
    else:
        _fit_ticks(fig, [(ax, "x", list(range(cols)), [str(c) for c in range(cols)]),
                         (ax, "y", list(range(len(nodes))), [str(n) for n in nodes])])
        caption = (f"{len(slots)} GPUs on {len(nodes)} nodes, coloured by pipeline stage (too many to "
                   "label: ranks are in the GPU table below).")
    if pp > MAX_LEGEND:
        caption = caption.rstrip(".") + f"; the legend names the first {MAX_LEGEND} of {pp} stages."
    return Picture("cluster", "Cluster map", caption, fig)


def placement_map(data: ReportData) -> Picture:
    """MoE layers x experts, coloured by the EP rank that holds each expert."""
    if not data.placement:
        why = ("it does not fit the instance" if data.inst is not None
               else "no instance was given (--instance) to derive one")
        return Picture("placement", "Expert placement", f"The plan gives no expert placement and {why}.")
    ep = max(len(r) for r in data.placement.values())
    if ep == 1:
        return Picture("placement", "Expert placement", "EP = 1: every GPU holds every expert of "
                       "every MoE layer; no placement map to draw.")
    layers = list(data.placement)
    num_experts = max((e for ranks in data.placement.values() for r in ranks for e in r), default=-1) + 1
    if num_experts * len(layers) > MAX_MAP_CELLS:
        return Picture("placement", "Expert placement", f"{num_experts} experts x {len(layers)} layers: "
                       "too large to draw; the expert lists are in the table below.")
    grid = [[math.nan] * num_experts for _ in layers]
    for i, layer in enumerate(layers):
        for rank in reversed(range(len(data.placement[layer]))):  # replicas: lowest rank shown
            for e in data.placement[layer][rank]:
                grid[i][e] = rank
    fig = _figure(min(0.22 * len(layers), 9.0) + 1.2)
    ax = fig.add_subplot()
    cmap = _categorical(ep) if ep <= 20 else matplotlib.colormaps["turbo"]
    norm = BoundaryNorm([x - 0.5 for x in range(ep + 1)], cmap.N) if ep <= 20 else None
    im = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest",
                   vmin=None if norm else -0.5, vmax=None if norm else ep - 0.5)
    fig.colorbar(im, ax=ax, label="EP rank", shrink=0.9, ticks=list(range(ep)) if norm else None)
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    if num_experts <= 32 and len(layers) <= 40:
        fs = min(8.0, 0.8 * WIDTH_IN * 72 / num_experts / 2.2)
        for i, layer in enumerate(layers):
            for e in range(num_experts):
                if not math.isnan(grid[i][e]):
                    ax.text(e, i, str(int(grid[i][e])), ha="center", va="center", fontsize=fs,
                            in_layout=False)
    _fit_ticks(fig, [(ax, "x", list(range(num_experts)), [str(e) for e in range(num_experts)]),
                     (ax, "y", list(range(len(layers))), [str(x) for x in layers])])
    caption = (f"Which EP rank holds each of the {num_experts} experts in each of the {len(layers)} MoE "
               f"layers (EP {ep}); the expert lists are in the table below.")
    return Picture("placement", "Expert placement", caption, fig)


def memory_bars(data: ReportData) -> Picture:
    """Stacked memory per GPU against the capacity line; identical neighbours merge beyond 128."""
    if data.memory is None:
        return Picture("memory", "Memory per GPU", "The plan gives no memory per GPU and no instance "
                       "was given (--instance) to compute it.")
    fig = _figure(3.6)
    ax = fig.add_subplot()
    n = len(data.memory)
    runs = [(i, 1, m) for i, m in enumerate(data.memory)] if n <= 128 else _runs(data.memory)
    colors = matplotlib.colormaps["tab10"].colors
    bottoms = [0.0] * len(runs)
    for k, part in enumerate(MEMORY_PARTS):  # one collection per part: far faster than ax.bar
        verts = []
        for i, (start, width, parts) in enumerate(runs):
            gap = 0.1 if width == 1 else 0.01
            x0, x1 = start - 0.5 + gap, start + width - 0.5 - gap
            y0, y1 = bottoms[i], bottoms[i] + parts[k]
            verts.append([(x0, y0), (x0, y1), (x1, y1), (x1, y0)])
            bottoms[i] = y1
        bars = PolyCollection(verts, facecolors=colors[k], edgecolors="none", label=part)
        bars.set_in_layout(False)
        ax.add_collection(bars)
    top = max(sum(m) for m in data.memory)
    caption = (f"Memory per GPU (GB, {data.memory_source}): weights, KV cache, activations, buffers; "
               f"peak {top:.2f} GB")
    if data.inst is not None:
        limit, hbm = data.inst.memory_limit_gb, data.inst.hardware.gpu.memory_gb
        ax.axhline(limit, color="black", linestyle="--", linewidth=1.6, zorder=5,
                   label=f"limit {limit:g} GB")
        if hbm != limit:
            ax.axhline(hbm, color="dimgrey", linestyle=":", linewidth=1.6, zorder=5,
                       label=f"HBM {hbm:g} GB")
        top = max(top, limit, hbm)
        caption += f" against the {limit:g} GB limit."
    else:
        caption += "; no instance given (--instance), so no capacity line."
    ax.set_ylim(0, top * 1.12)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("GPU (global rank)")
    ax.set_ylabel("GB per GPU")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _fit_ticks(fig, [(ax, "x", list(range(n)), [str(s.rank) for s in data.slots])])
    return Picture("memory", "Memory per GPU", caption, fig)


def _runs(memory: list[tuple[float, ...]]) -> list[tuple[int, int, tuple[float, ...]]]:
    out: list[tuple[int, int, tuple[float, ...]]] = []
    for i, m in enumerate(memory):
        if out and out[-1][2] == m:
            out[-1] = (out[-1][0], out[-1][1] + 1, m)
        else:
            out.append((i, 1, m))
    return out


def load_map(data: ReportData) -> Picture:
    """Heat map of routed load per EP rank / mean, per MoE layer, with balancedness beside it."""
    title = "Routed load per EP rank"
    if data.inst is None:
        return Picture("loads", title, "Routed loads need the instance's expert loads: no instance "
                       "given (--instance), so only the placement is shown above.")
    loads = rank_loads(data)
    if not loads:
        return Picture("loads", title, "The plan does not fit the instance, so its routed loads "
                       "cannot be computed (see the notes above).")
    layers = list(loads)
    ep = max(len(v) for v in loads.values())
    grid = [v + [math.nan] * (ep - len(v)) for v in loads.values()]
    bal = [1.0 / max(v) for v in loads.values()]
    fig = _figure(min(0.2 * len(layers), 9.5) + 1.4)
    heat, side = fig.subplots(1, 2, sharey=True, width_ratios=[4, 1])
    lo, hi = min(min(v) for v in loads.values()), max(max(v) for v in loads.values())
    norm = TwoSlopeNorm(vcenter=1.0, vmin=min(lo, 1 - 1e-3), vmax=max(hi, 1 + 1e-3))
    im = heat.imshow(grid, cmap="coolwarm", norm=norm, aspect="auto", interpolation="nearest")
    ticks = sorted({round(norm.vmin, 2), round((norm.vmin + 1) / 2, 2), 1.0,
                    round((1 + norm.vmax) / 2, 2), round(norm.vmax, 2)})
    fig.colorbar(im, ax=heat, label="rank load / mean (1 = balanced)", shrink=0.6, location="bottom",
                 aspect=40, ticks=ticks, format="%.2f")
    heat.set_xlabel("EP rank")
    heat.set_ylabel("MoE layer")
    if ep <= 16 and len(layers) <= 24:
        fs = min(8.0, 0.75 * WIDTH_IN * 0.8 * 72 / ep / 2.6)
        for i, row in enumerate(grid):
            for r, v in enumerate(row):
                heat.text(r, i, f"{v:.2f}", ha="center", va="center", fontsize=fs, in_layout=False)
    _out_of_layout(side.barh(range(len(layers)), bal, color="seagreen", height=0.8))
    side.set_xlim(0, 1.05)
    side.set_xlabel("balancedness (mean/max)")
    _fit_ticks(fig, [(heat, "x", list(range(ep)), [str(r) for r in range(ep)]),
                     (heat, "y", list(range(len(layers))), [str(x) for x in layers])])
    worst = min(range(len(bal)), key=lambda i: bal[i])
    caption = (f"Routed load of each EP rank / mean, {len(layers)} MoE layers (instance loads); "
               f"balancedness mean {sum(bal) / len(bal):.3f}, worst {bal[worst]:.3f} "
               f"(layer {layers[worst]}).")
    return Picture("loads", title, caption, fig)


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
    if _is_number(m.get("max_memory_gb")):
        lim = data.inst.memory_limit_gb
        rows.append(("memory_per_gpu", m["max_memory_gb"], lim, "GB", "<=", m["max_memory_gb"] <= lim))
    if req.max_ttft_s is not None and _is_number(m.get("ttft_s")):
        rows.append(("ttft", m["ttft_s"], req.max_ttft_s, "s", "<", m["ttft_s"] < req.max_ttft_s))
    key = ("throughput_tokens_per_ms_per_gpu" if req.throughput_scope == "per_gpu"
           else "throughput_tokens_per_ms")
    if req.min_throughput_tokens_per_ms and _is_number(m.get(key)):
        target = req.min_throughput_tokens_per_ms
        unit = "tokens/ms/GPU" if req.throughput_scope == "per_gpu" else "tokens/ms"
        rows.append(("throughput", m[key], target, unit, ">=", m[key] >= target))
    if req.max_tpot_ms is not None and _is_number(m.get("tpot_ms")):
        rows.append(("tpot", float(m["tpot_ms"]), float(req.max_tpot_ms), "ms", "<=",
                     m["tpot_ms"] <= req.max_tpot_ms))
    return rows


def requirement_bars(data: ReportData) -> Picture:
    """One panel per requirement: the plan's value as a bar, the target as a dashed line."""
    title = "Requirements"
    if data.inst is None:
        return Picture("requirements", title, "The requirements are in the instance: no instance "
                       "given (--instance), so they are not shown.")
    rows = requirement_rows(data)
    if not rows:
        return Picture("requirements", title, "The instance sets no requirement this plan states "
                       "a figure for.")
    fig = _figure(1.9)
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    for ax, (name, value, target, unit, rel, ok) in zip(axes, rows):
        ax.barh([0], [value], color="seagreen" if ok else "crimson", height=0.5)
        ax.axvline(target, color="black", linestyle="--", linewidth=1.6)
        right = max(value, target) * 1.3 or 1.0
        ax.set_xlim(0, right)
        ax.set_ylim(-0.5, 0.5)
        ax.set_yticks([])
        ax.set_title(f"{name} {rel} {target:g} {unit}")
        inside = value > 0.5 * right
        ax.text(value * (0.98 if inside else 1.0) + (0 if inside else 0.02 * right), 0, f"{value:.4g}",
                va="center", ha="right" if inside else "left", fontsize=8,
                color="white" if inside else "black", fontweight="bold")
        ax.set_xlabel(unit)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    ok = sum(r[5] for r in rows)
    caption = (f"Requirements: the plan's value (bar; green = met, red = violated) against the "
               f"target (dashed); {ok} of {len(rows)} met.")
    return Picture("requirements", title, caption, fig)


def pareto_plots(data: ReportData, results_dir: str | Path) -> list[Picture]:
    """A Pareto plot per sweep/Pareto table found under ``results/<instance>/``."""
    folder = Path(results_dir) / data.name if data.name and NAME_RE.fullmatch(data.name) else None
    found = [folder / f for f in TABLE_FILES if folder is not None and (folder / f).is_file()]
    if not found:
        where = f"{folder}/" if folder else "results/<instance>/"
        return [Picture("pareto", "Pareto front", f"No sweep or Pareto table found ({where}"
                        f"{' or '.join(TABLE_FILES)}).")]
    return [_pareto_plot(data, path) for path in found]


def _read_table(path: Path) -> list[dict] | str:
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


PARETO_NEEDS = ("num_gpus", "ttft_s", "throughput_tokens_per_ms_per_gpu", "load_imbalance",
                "communication_ms")
PLAN_KEY = ("num_gpus", "tp", "pp", "dp", "ep", "etp", "edp", "micro_batches")
MARKERS = {"pareto": dict(marker="o", edgecolors="black", linewidths=1.2, s=46, zorder=3),
           "dominated": dict(marker="o", facecolors="none", s=40, zorder=2),
           "infeasible": dict(marker="x", s=40, zorder=2)}


def _kind(row: dict) -> str:
    if _flag(row.get("pareto")):
        return "pareto"
    return "dominated" if _flag(row.get("feasible", "true")) else "infeasible"


def _pareto_plot(data: ReportData, path: Path) -> Picture:
    """Two views of a sweep/Pareto table: TTFT vs throughput per GPU, and the other two
    Pareto objectives (communication vs load imbalance); colour = GPU count."""
    rows = _read_table(path)
    anchor, title = f"pareto-{path.stem}", f"Pareto front ({path.name})"
    if isinstance(rows, str):
        return Picture(anchor, title, rows)
    missing = [c for c in PARETO_NEEDS if not rows or c not in rows[0]]
    if missing:
        return Picture(anchor, title, f"{path} has no rows or lacks the columns "
                       f"{', '.join(missing)}; no plot.")
    key_cols = [k for k in PLAN_KEY if k in rows[0]]
    plan_key = tuple(float(getattr(data.deg, k, data.deg.num_gpus)) for k in key_cols)
    pts = [{k: _float(r.get(k)) for k in PARETO_NEEDS}
           | {"kind": _kind(r), "mine": tuple(_float(r.get(k)) for k in key_cols) == plan_key}
           for r in rows]
    counts = sorted({p["num_gpus"] for p in pts if not math.isnan(p["num_gpus"])})
    cmap = _categorical(max(len(counts), 1))
    colour = {n: cmap(i) for i, n in enumerate(counts)}
    fig = _figure(3.8)
    panels = zip(fig.subplots(1, 2), (("ttft_s", "throughput_tokens_per_ms_per_gpu"),
                                      ("load_imbalance", "communication_ms")))
    labels = {"ttft_s": "TTFT (s)", "throughput_tokens_per_ms_per_gpu": "throughput per GPU (tokens/ms)",
              "load_imbalance": "load imbalance (max/mean - 1)", "communication_ms": "communication (ms)"}
    for ax, (x, y) in panels:
        for kind, style in MARKERS.items():
            sel = [p for p in pts if p["kind"] == kind]
            if sel:
                c = [colour.get(p["num_gpus"], "grey") for p in sel]
                ax.scatter([p[x] for p in sel], [p[y] for p in sel],
                           **style, **({"edgecolors": c} if kind == "dominated" else {"c": c}))
        for p in pts:
            if p["mine"]:
                ax.scatter([p[x]], [p[y]], marker="*", s=260, c="crimson", edgecolors="black", zorder=4)
        ax.set_xlabel(labels[x])
        ax.set_ylabel(labels[y])
        ax.grid(alpha=0.3)
    handles = [Patch(color=colour[n], label=f"{n:g} GPUs") for n in counts[:12]]
    kinds = (("Pareto", dict(marker="o")), ("dominated", dict(marker="o", fillstyle="none")),
             ("misses a requirement", dict(marker="x")),
             ("this plan", dict(marker="*", markersize=12, markerfacecolor="crimson")))
    handles += [matplotlib.lines.Line2D([], [], linestyle="none", color="black", label=label, **marker)
                for label, marker in kinds]
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    n_front = sum(p["kind"] == "pareto" for p in pts)
    mine = any(p["mine"] for p in pts)
    caption = (f"{path.name}: {len(pts)} deployments, {n_front} on the Pareto front (non-dominated in "
               f"the table's objectives), {sum(p['kind'] != 'infeasible' for p in pts)} meet the "
               "requirements; " + ("the star is this plan." if mine else "this plan is not in the table."))
    return Picture(anchor, title, caption, fig)


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 1.5em auto; max-width: 1160px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 2px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, p.missing { font-style: italic; color: #444; }
p.note { background: #fff4d6; padding: 4px 8px; } .bad { color: #b00; font-weight: bold; }
.tables { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def exact(value: object) -> str:
    """A value exactly as JSON writes it (how the report states the plan's numbers)."""
    return json.dumps(value, ensure_ascii=False)


def readable(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.1f}" if 1e3 <= abs(value) < 1e9 else f"{value:.4g}"
    return str(value)


def _table(headers: list[str], rows: list[list[object]], caption: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td{_cell_class(c)}>{_e(c)}</td>" for c in row) + "</tr>\n"
                   for row in rows)
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"


def _cell_class(c: object) -> str:
    if c in ("VIOLATED", "differs"):
        return ' class="bad"'
    numeric = isinstance(c, (int, float)) or (isinstance(c, str) and re.fullmatch(r"-?[0-9.,e+-]+", c))
    return ' class="num"' if numeric else ""


def _summary_tables(data: ReportData) -> str:
    doc, d = data.doc, data.deg
    nodes = len({s.node for s in data.slots})
    plan_rows = [["instance", doc.get("instance", data.name)], ["status", doc.get("status", "n/a")],
                 ["num_gpus", doc.get("num_gpus", d.num_gpus)], ["nodes", nodes],
                 ["micro_batches", doc.get("micro_batches", d.micro_batches)]]
    if "sequences_per_micro_batch" in doc:
        plan_rows.append(["sequences_per_micro_batch", doc["sequences_per_micro_batch"]])
    plan_rows = [[k, exact(v) if _is_number(v) else readable(v)] for k, v in plan_rows]
    given = doc.get("degrees") if isinstance(doc.get("degrees"), dict) else {}
    deg_rows = [[k, exact(given[k]) if k in given else f"{getattr(d, k)} (derived)"]
                for k in ("tp", "pp", "dp", "ep", "etp", "edp")]
    stage_rows = [[j, _range_text(ls), len(ls)] for j, ls in data.stages]
    out = ['<div class="tables">', _table(["plan", "value"], plan_rows, "Plan"),
           _table(["degree", "value"], deg_rows, "Parallel degrees")]
    if stage_rows:
        out.append(_table(["stage", "layers", "count"], stage_rows, "Pipeline stages"))
    out.append("</div>")
    return "".join(out) + _metric_table(data) + _solver_table(data) + _check_table(data)


def _metric_table(data: ReportData) -> str:
    stated = data.doc.get("metrics") if isinstance(data.doc.get("metrics"), dict) else {}
    computed = data.ev.metrics() if data.ev is not None else {}
    names = list(stated) + [k for k in computed if k not in stated]
    if not names:
        return ('<p class="missing">The plan states no metrics and no instance was given to '
                "compute them.</p>")
    headers = ["metric", "value", "exact (plan.json)"] + (["recomputed", "verdict"] if computed else [])
    rows = []
    for k in names:
        row = [k, readable(stated[k]) if k in stated else "-", exact(stated[k]) if k in stated else "-"]
        if computed:
            ref = computed.get(k)
            row += [readable(ref) if ref is not None else "not derivable", _verdict(stated.get(k), ref)]
        rows.append(row)
    note = (" (recomputed from the plan and the instance, as moeopt check does)" if computed else "")
    return _table(headers, rows, "Metrics" + note)


def _verdict(stated: object, ref: float | None) -> str:
    """'holds' when the stated figure is within CLAIM_TOLERANCE of the recomputed one."""
    if ref is None or not _is_number(stated):
        return "-"
    close = abs(stated - ref) <= CLAIM_TOLERANCE * abs(ref) or abs(stated - ref) < 1e-9
    return "holds" if close else "differs"


def _solver_table(data: ReportData) -> str:
    solver = data.doc.get("solver")
    if not isinstance(solver, dict):
        return '<p class="missing">The plan has no solver block (hand-written plan?).</p>'
    keys = ["status", "objective", "bound", "gap", "wall_s"]
    keys += [k for k in solver if k not in keys]
    rows = [[k, readable(solver.get(k)), exact(solver.get(k)) if k in solver else "-"] for k in keys]
    return _table(["solver", "value", "exact (plan.json)"], rows, "Solver: status, bound and gap")


def _check_table(data: ReportData) -> str:
    checks = [c for c in data.structure if not c.ok]
    rows = [[n, readable(v), f"{rel} {t:g}", u, "ok" if ok else "VIOLATED"]
            for n, v, t, u, rel, ok in requirement_rows(data)]
    rows += [[c.name, "no", "", "rule", "VIOLATED"] for c in checks]
    if not rows:
        return ""
    return _table(["requirement", "value", "target", "unit", "verdict"], rows, "Requirements")


def _placement_table(data: ReportData) -> str:
    """Experts per EP rank per MoE layer; consecutive identical layers share one row."""
    if not data.placement:
        return ""
    groups: list[tuple[list[int], list[list[int]]]] = []
    for layer, ranks in data.placement.items():
        if groups and groups[-1][1] == ranks and groups[-1][0][-1] == layer - 1:
            groups[-1][0].append(layer)
        else:
            groups.append(([layer], ranks))
    ep = max(len(r) for r in data.placement.values())
    rows = [[_range_text(ls)] + [",".join(map(str, r)) for r in ranks] for ls, ranks in groups]
    table = _table(["MoE layer(s)"] + [f"EP {r}" for r in range(ep)], rows,
                   "Experts held by each EP rank, per MoE layer")
    opened = " open" if len(rows) * ep <= 400 else ""
    return (f"<details{opened}><summary>Experts per EP rank and layer ({len(data.placement)} MoE layers, "
            f"EP {ep})</summary>\n{table}</details>\n")


def _gpu_table(data: ReportData) -> str:
    names = ["rank", "node", "local_rank", "stage", "tp_rank", "dp_rank", "ep_rank", "etp_rank", "edp_rank"]
    rows = []
    for i, s in enumerate(data.slots):
        mem = [f"{x:.2f}" for x in data.memory[i]] + [f"{sum(data.memory[i]):.2f}"] if data.memory else []
        rows.append([getattr(s, n) for n in names] + mem)
    headers = names + ([f"{p} GB" for p in MEMORY_PARTS] + ["total GB"] if data.memory else [])
    opened = " open" if len(rows) <= 16 else ""
    return (f"<details{opened}><summary>GPU table ({len(rows)} GPUs)</summary>\n"
            f"{_table(headers, rows, 'Ranks and memory of every GPU')}</details>\n")


def _picture_html(p: Picture) -> str:
    head = f'<h2 id="{_e(p.anchor)}">{_e(p.title)}</h2>\n'
    if p.fig is None:
        return head + f'<p class="missing">{_e(p.caption)}</p>\n'
    return (head + f'<figure><img alt="{_e(p.title)}" src="data:image/png;base64,{png_base64(p.fig)}">'
            f"<figcaption>{_e(p.caption)}</figcaption></figure>\n")


def render_report(inst: Instance | None, plan_json: dict, results_dir: str | Path = "results",
                  source: str | None = None) -> str:
    """The whole HTML page for a plan (and optionally its instance)."""
    data = collect(inst, plan_json)
    return page_html(data, pictures(data, results_dir), source)


def page_html(data: ReportData, pics: list[Picture], source: str | None = None) -> str:
    """The page: title, notes, the plan's tables, then each picture (rendered here)."""
    title = f"moeopt report: {data.name or 'plan'}"
    d = data.deg
    line = (f"{d.num_gpus} GPUs | TP {d.tp} x DP {d.dp} | EP {d.ep} x ETP {d.etp} x EDP {d.edp} | "
            f"PP {d.pp} | {d.micro_batches} micro-batches | status {data.doc.get('status', 'n/a')}")
    parts = ["<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
             f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
             f"<h1>{_e(title)}</h1>\n<p>{_e(line)}</p>\n"]
    if source:
        parts.append(f"<p>plan file: <code>{_e(source)}</code>"
                     + (f"; instance: <code>{_e(data.inst.name)}</code>" if data.inst else
                        "; no instance given (--instance)") + "</p>\n")
    parts += [f'<p class="note">Note: {_e(n)}</p>\n' for n in data.notes]
    parts.append(_summary_tables(data))
    for p in pics:
        parts.append(_picture_html(p))
        if p.anchor == "placement":
            parts += [_placement_table(data), _gpu_table(data)]
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def default_report_path(inst: Instance | None, plan_json: dict,
                        results_dir: str | Path = "results") -> Path:
    """``results/<instance>/report.html``, the instance named by ``inst`` or else the plan."""
    name = inst.name if inst is not None else plan_json.get("instance")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InputError(f"plan: instance={name!r}: not a usable results folder name "
                         "(letters, digits, '_', '.', '-'); give --output or --instance")
    return Path(results_dir) / name / "report.html"


def write_report(inst: Instance | None, plan_json: dict, path: str | Path,
                 results_dir: str | Path = "results", source: str | None = None) -> Path:
    """Render the report and write it atomically to ``path``; returns the path."""
    write_atomic(path, render_report(inst, plan_json, results_dir, source))
    return Path(path)


__all__ = ["ReportData", "Picture", "collect", "pictures", "page_html", "render_report", "write_report",
           "default_report_path", "rank_loads", "tick_boxes", "png_base64"]
