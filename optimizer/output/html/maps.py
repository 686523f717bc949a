"""Grid pictures: the cluster map (nodes x GPUs by pipeline stage) and the routed-load heat map
(MoE layers x EP ranks); the expert placement pictures are in ``placement``."""

from __future__ import annotations

import math

from matplotlib.colors import BoundaryNorm, TwoSlopeNorm
from matplotlib.patches import Patch

from optimizer.output.html.canvas import DPI, WIDTH_IN, Picture, categorical, figure, fit_ticks, out_of_layout
from optimizer.output.html.data import ReportData, range_text, rank_loads

LABELLED_CELLS = 256             # cluster maps with more GPUs collapse into a heat map
MIN_LABEL_PT = 5.5               # ... and so do maps whose cell labels would be smaller
MAX_LEGEND = 16                  # stages named in the cluster map's legend
UNIFORM_LOAD = 1e-3              # rank loads within 0.1 % of the mean: "uniform", no heat map


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
    fig = figure(len(nodes) * cell_h + 1.3)
    ax = fig.add_subplot()
    grid = [[math.nan] * cols for _ in nodes]
    for s in slots:
        grid[row_of[s.node]][s.local_rank] = s.stage
    pp = max(data.deg.pp, max(s.stage for s in slots) + 1)
    cmap = categorical(pp)
    ax.imshow(grid, cmap=cmap, norm=BoundaryNorm([x - 0.5 for x in range(pp + 1)], pp),
              aspect="auto", interpolation="nearest")
    ax.set_xlabel("GPU in node (local rank)")
    ax.set_ylabel("node")
    stage_layers = dict(data.stages)
    handles = [Patch(color=cmap(j), label=f"stage {j}" + (f": layers {range_text(stage_layers[j])}"
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
        fit_ticks(fig, [(ax, "x", list(range(cols)), [str(c) for c in range(cols)]),
                         (ax, "y", list(range(len(nodes))), [str(n) for n in nodes])])
        caption = (f"{len(slots)} GPUs on {len(nodes)} nodes, coloured by pipeline stage (too many to "
                   "label: ranks are in the GPU table below).")
    if pp > MAX_LEGEND:
        caption = caption.rstrip(".") + f"; the legend names the first {MAX_LEGEND} of {pp} stages."
    return Picture("cluster", "Cluster map", caption, fig)


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
    if max(len(v) for v in loads.values()) == 1:
        return Picture("loads", title, "EP = 1: each GPU routes every token to its own copy of every "
                       "expert, so there is no load per EP rank to compare.")
    spread = max(abs(x - 1.0) for v in loads.values() for x in v)
    if spread <= UNIFORM_LOAD:
        return Picture("loads", title, f"Loads are uniform: in all {len(layers)} MoE layers every EP "
                       f"rank gets the mean routed load within {UNIFORM_LOAD:.1%} (largest deviation "
                       f"{spread:.2%}); no heat map to draw.")
    ep = max(len(v) for v in loads.values())
    grid = [v + [math.nan] * (ep - len(v)) for v in loads.values()]
    bal = [1.0 / max(v) for v in loads.values()]
    fig = figure(min(0.2 * len(layers), 9.5) + 1.4)
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
    out_of_layout(side.barh(range(len(layers)), bal, color="seagreen", height=0.8))
    side.set_xlim(0, 1.05)
    side.set_xlabel("balancedness (mean/max)")
    fit_ticks(fig, [(heat, "x", list(range(ep)), [str(r) for r in range(ep)]),
                     (heat, "y", list(range(len(layers))), [str(x) for x in layers])])
    worst = min(range(len(bal)), key=lambda i: bal[i])
    caption = (f"Routed load of each EP rank / mean, {len(layers)} MoE layers (instance loads); "
               f"balancedness mean {sum(bal) / len(bal):.3f}, worst {bal[worst]:.3f} "
               f"(layer {layers[worst]}).")
    return Picture("loads", title, caption, fig)
