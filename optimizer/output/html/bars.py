"""Bar pictures: memory per GPU (stacked parts against the limit) and the requirements
(the plan's value against each target)."""

from __future__ import annotations

import matplotlib
from matplotlib.collections import PolyCollection
from matplotlib.ticker import MaxNLocator

from optimizer.output.html.canvas import Picture, figure, fit_ticks
from optimizer.output.html.data import MEMORY_PARTS, ReportData, requirement_rows



def memory_bars(data: ReportData) -> Picture:
    """Stacked memory per GPU against the capacity line; identical neighbours merge beyond 128."""
    if data.memory is None:
        return Picture("memory", "Memory per GPU", "The plan gives no memory per GPU and no instance "
                       "was given (--instance) to compute it.")
    fig = figure(3.6)
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
    fit_ticks(fig, [(ax, "x", list(range(n)), [str(s.rank) for s in data.slots])])
    return Picture("memory", "Memory per GPU", caption, fig)


def _runs(memory: list[tuple[float, ...]]) -> list[tuple[int, int, tuple[float, ...]]]:
    out: list[tuple[int, int, tuple[float, ...]]] = []
    for i, m in enumerate(memory):
        if out and out[-1][2] == m:
            out[-1] = (out[-1][0], out[-1][1] + 1, m)
        else:
            out.append((i, 1, m))
    return out


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
    fig = figure(1.9)
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
