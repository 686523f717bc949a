"""Expert placement pictures: which EP rank holds which expert in each MoE layer.

Up to ``MAX_EXPERT_COLUMNS`` experts the map shows every expert (MoE layers x experts, coloured
by EP rank). Beyond that one column per expert is an unreadable barcode, so the page shows,
with the instance's loads, the hot-expert view (each layer's ``HOT_EXPERTS`` most loaded
experts, hottest first, labelled with the EP rank holding them), and without loads (or with
uniform ones) the number of experts per EP rank (a sentence when every rank holds as many).
"""

from __future__ import annotations

import math

import matplotlib
from matplotlib.colors import BoundaryNorm, Normalize

from optimizer.output.html.canvas import WIDTH_IN, Picture, categorical, figure, fit_ticks
from optimizer.output.html.data import ReportData

MAX_EXPERT_COLUMNS = 64          # more experts than this: no map with one column per expert
HOT_EXPERTS = 32                 # columns of the hot-expert view
MAX_MAP_CELLS = 4_000_000        # layers x experts beyond which no placement map is drawn
UNEVEN = 1e-3                    # expert loads of a layer differing by more: some are hot
MIN_TEXT_PT = 5.0                # cell labels smaller than this are left out
TITLE = "Expert placement"


def placement_map(data: ReportData) -> Picture:
    """The placement picture that stays readable for this many experts (see the module)."""
    if not data.placement:
        why = ("it does not fit the instance" if data.inst is not None
               else "no instance was given (--instance) to derive one")
        return Picture("placement", TITLE, f"The plan gives no expert placement and {why}.")
    ep = max(len(r) for r in data.placement.values())
    if ep == 1:
        return Picture("placement", TITLE, "EP = 1: every GPU holds every expert of "
                       "every MoE layer; no placement map to draw.")
    layers = list(data.placement)
    num_experts = max((e for ranks in data.placement.values() for r in ranks for e in r), default=-1) + 1
    if num_experts > MAX_EXPERT_COLUMNS:
        if data.loads is not None and all(layer in data.loads for layer in layers):
            if any(max(data.loads[x]) - min(data.loads[x]) > UNEVEN * max(data.loads[x]) for x in layers):
                return hot_expert_map(data, ep, num_experts)
            return rank_count_map(data, ep, num_experts, "every expert carries the same load, so "
                                  "there is no hot-expert view")
        return rank_count_map(data, ep, num_experts, "with --instance, the instance's loads add a "
                              "hot-expert view")
    if num_experts * len(layers) > MAX_MAP_CELLS:
        return Picture("placement", TITLE, f"{num_experts} experts x {len(layers)} layers: "
                       "too large to draw; the expert lists are in the table below.")
    return _expert_map(data, ep, num_experts)


def holders(ranks: list[list[int]]) -> dict[int, int]:
    """{expert: the lowest EP rank holding it} of one layer (replicas: the lowest rank shown)."""
    out: dict[int, int] = {}
    for rank in reversed(range(len(ranks))):
        for e in ranks[rank]:
            out[e] = rank
    return out


def _rank_colours(ep: int):
    """(colormap, norm, imshow keywords) colouring EP ranks 0..ep-1."""
    if ep <= 20:
        cmap = categorical(ep)
        return cmap, BoundaryNorm([x - 0.5 for x in range(ep + 1)], cmap.N), {}
    return matplotlib.colormaps["turbo"], None, {"vmin": -0.5, "vmax": ep - 0.5}


def _expert_map(data: ReportData, ep: int, num_experts: int) -> Picture:
    """MoE layers x experts, coloured by the EP rank that holds each expert."""
    layers = list(data.placement)
    grid = [[math.nan] * num_experts for _ in layers]
    for i, layer in enumerate(layers):
        for e, rank in holders(data.placement[layer]).items():
            grid[i][e] = rank
    fig = figure(min(0.22 * len(layers), 9.0) + 1.2)
    ax = fig.add_subplot()
    cmap, norm, limits = _rank_colours(ep)
    im = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest", **limits)
    fig.colorbar(im, ax=ax, label="EP rank", shrink=0.9, ticks=list(range(ep)) if norm else None)
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    if num_experts <= 32 and len(layers) <= 40:
        fs = min(8.0, 0.8 * WIDTH_IN * 72 / num_experts / 2.2)
        for i, _layer in enumerate(layers):
            for e in range(num_experts):
                if not math.isnan(grid[i][e]):
                    ax.text(e, i, str(int(grid[i][e])), ha="center", va="center", fontsize=fs,
                            in_layout=False)
    fit_ticks(fig, [(ax, "x", list(range(num_experts)), [str(e) for e in range(num_experts)]),
                    (ax, "y", list(range(len(layers))), [str(x) for x in layers])])
    caption = (f"Which EP rank holds each of the {num_experts} experts in each of the {len(layers)} MoE "
               f"layers (EP {ep}); the expert lists are in the table below.")
    return Picture("placement", TITLE, caption, fig)


def hot_experts(data: ReportData, layer: int, count: int) -> list[tuple[int, int]]:
    """(expert, EP rank holding it) of the layer's ``count`` most loaded experts, hottest first
    (ties: lower expert id first)."""
    held = holders(data.placement[layer])
    load = data.loads[layer]
    return [(e, held[e]) for e in sorted(held, key=lambda e: (-load[e], e))[:count]]


def hot_expert_map(data: ReportData, ep: int, num_experts: int) -> Picture:
    """MoE layers x each layer's hottest experts (hottest left), cell = the EP rank holding it."""
    layers = list(data.placement)
    k = min(HOT_EXPERTS, num_experts)
    grid = [[rank for _, rank in hot_experts(data, layer, k)] for layer in layers]
    grid = [row + [math.nan] * (k - len(row)) for row in grid]
    height = min(0.22 * len(layers), 9.0) + 1.2
    fig = figure(height)
    ax = fig.add_subplot()
    cmap, norm, limits = _rank_colours(ep)
    im = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest", **limits)
    fig.colorbar(im, ax=ax, label="EP rank", shrink=0.9, ticks=list(range(ep)) if norm else None)
    ax.set_xlabel(f"the layer's {k} most loaded experts, hottest first (instance loads)")
    ax.set_ylabel("MoE layer")
    row_pt = (height - 1.2) * 72 / len(layers)
    col_pt = 0.8 * WIDTH_IN * 72 / k
    fs = min(8.0, 0.6 * row_pt, col_pt / (len(str(ep - 1)) * 0.75 + 0.5))
    if fs >= MIN_TEXT_PT:
        scale = norm if norm is not None else Normalize(limits["vmin"], limits["vmax"])
        for i, row in enumerate(grid):
            for j, rank in enumerate(row):
                if not math.isnan(rank):
                    r, g, b, _ = cmap(scale(rank))
                    ax.text(j, i, str(int(rank)), ha="center", va="center", fontsize=fs, in_layout=False,
                            color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
    fit_ticks(fig, [(ax, "x", list(range(k)), [str(j + 1) for j in range(k)]),
                    (ax, "y", list(range(len(layers))), [str(x) for x in layers])])
    caption = (f"The EP rank holding each of the {k} most loaded of the {num_experts} experts, per MoE "
               f"layer ({len(layers)} layers, EP {ep}), hottest left: a rank that recurs in a row holds "
               "several hot experts. Every expert's rank is in the table below.")
    return Picture("placement", TITLE, caption, fig)


def rank_count_map(data: ReportData, ep: int, num_experts: int, why: str) -> Picture:
    """Experts held per EP rank and MoE layer (a sentence when all are equal); ``why`` says why
    there is no hot-expert view."""
    layers = list(data.placement)
    counts = [[len(r) for r in ranks] + [math.nan] * (ep - len(ranks)) for ranks in data.placement.values()]
    distinct = {c for row in counts for c in row if not math.isnan(c)}
    if len(distinct) == 1:
        return Picture("placement", TITLE, f"Every EP rank holds {distinct.pop()} of the {num_experts} "
                       f"experts in each of the {len(layers)} MoE layers (EP {ep}); which ones is in "
                       f"the table below ({why}).")
    fig = figure(min(0.22 * len(layers), 9.0) + 1.2)
    ax = fig.add_subplot()
    im = ax.imshow(counts, cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="experts held", shrink=0.9)
    ax.set_xlabel("EP rank")
    ax.set_ylabel("MoE layer")
    fit_ticks(fig, [(ax, "x", list(range(ep)), [str(r) for r in range(ep)]),
                    (ax, "y", list(range(len(layers))), [str(x) for x in layers])])
    caption = (f"Experts held by each EP rank in each of the {len(layers)} MoE layers ({num_experts} "
               f"experts, EP {ep}, replicas counted; {why}); the expert lists are in the table below.")
    return Picture("placement", TITLE, caption, fig)
