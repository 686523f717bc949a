"""Bar pictures: memory per GPU (stacked parts against the limit) and the requirements
(the plan's value against each target)."""

from __future__ import annotations

import matplotlib
from matplotlib.collections import PolyCollection
from matplotlib.ticker import MaxNLocator

from optimizer.inputs.hf import usable_memory_gb
from optimizer.output.html.canvas import Picture, figure, fit_ticks
from optimizer.output.html.data import MEMORY_PARTS, ReportData, requirement_rows


def memory_bars(data: ReportData) -> Picture:
    """Stacked memory per GPU; identical neighbours merge beyond 128 GPUs. With an instance the
    bars leave out the fixed runtime + NCCL reserve and stand against the usable memory (the
    limit less that reserve, as ``moeopt init`` states it), the reserve drawn as a band above."""
    if data.memory is None:
        return Picture("memory", "Memory per GPU", "The plan gives no memory per GPU and no instance "
                       "was given (--instance) to compute it.")
    reserve = _reserve_gb(data)
    memory = [m[:3] + (m[3] - reserve,) for m in data.memory] if reserve else data.memory
    fig = figure(3.6)
    ax = fig.add_subplot()
    n = len(memory)
    _stack(ax, [(i, 1, m) for i, m in enumerate(memory)] if n <= 128 else _runs(memory))
    top = max(sum(m) for m in memory)
    caption = f"Memory per GPU (GB, {data.memory_source}): weights, KV cache, activations, buffers"
    if data.inst is not None:
        top = max(top, _capacity_lines(ax, data, reserve))
        caption += _capacity_text(data, reserve)
    else:
        caption += "; no instance given (--instance), so no capacity line."
    ax.set_ylim(0, top * 1.12)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("GPU (global rank)")
    ax.set_ylabel("GB per GPU")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fit_ticks(fig, [(ax, "x", list(range(n)), [str(s.rank) for s in data.slots])])
    return Picture("memory", "Memory per GPU", caption, fig)


def _reserve_gb(data: ReportData) -> float:
    """The instance's runtime + NCCL reserve per GPU (GB) when every GPU's buffers include it
    (as the cost model counts them), else 0 (no instance, or a plan stating smaller buffers)."""
    if data.inst is None:
        return 0.0
    hw = data.inst.hardware
    reserve = hw.runtime_reserve_gb + hw.nccl_buffer_gb
    return reserve if all(m[3] >= reserve for m in data.memory) else 0.0


def _stack(ax, runs: list[tuple[int, int, tuple[float, ...]]]) -> None:
    """One PolyCollection per memory part (far faster than ax.bar); runs are (first, width, GB)."""
    colors = matplotlib.colormaps["tab10"].colors
    bottoms = [0.0] * len(runs)
    for k, part in enumerate(MEMORY_PARTS):
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


def _capacity_lines(ax, data: ReportData, reserve: float) -> float:
    """Usable line, reserve band, HBM line (when it is not the limit); returns the top in GB."""
    limit, hbm = data.inst.memory_limit_gb, data.inst.hardware.gpu.memory_gb
    usable = usable_memory_gb(limit, data.inst.hardware.runtime_reserve_gb,
                              data.inst.hardware.nccl_buffer_gb) if reserve else limit
    ax.axhline(usable, color="black", linestyle="--", linewidth=1.6, zorder=5,
               label="usable" if reserve else "limit")
    if reserve:
        ax.axhspan(usable, limit, color="lightgrey", alpha=0.6, zorder=0, label="runtime + NCCL reserve")
    if hbm != limit:
        ax.axhline(hbm, color="dimgrey", linestyle=":", linewidth=1.6, zorder=5, label="HBM capacity")
    return max(limit, hbm)


def _capacity_text(data: ReportData, reserve: float) -> str:
    """The usable figure with the raw capacity beside it, each number once."""
    hw = data.inst.hardware
    limit, hbm = data.inst.memory_limit_gb, hw.gpu.memory_gb
    raw = f"{hbm:g} GB HBM" if hbm == limit else f"the {limit:g} GB limit (raw HBM {hbm:g} GB)"
    if not reserve:
        return (f", as stated, against {raw}: the plan's buffers are smaller than the instance's "
                f"{hw.runtime_reserve_gb + hw.nccl_buffer_gb:.2f} GB runtime + NCCL reserve.")
    usable = usable_memory_gb(limit, hw.runtime_reserve_gb, hw.nccl_buffer_gb)
    return (f" (buffers without the runtime + NCCL reserve), against {usable:.1f} GB usable per GPU: "
            f"{raw} less the {reserve:.2f} GB reserve, as moeopt init counts it.")


def _runs(memory: list[tuple[float, ...]]) -> list[tuple[int, int, tuple[float, ...]]]:
    out: list[tuple[int, int, tuple[float, ...]]] = []
    for i, m in enumerate(memory):
        if out and out[-1][2] == m:
            out[-1] = (out[-1][0], out[-1][1] + 1, m)
        else:
            out.append((i, 1, m))
    return out


def requirement_bars(data: ReportData) -> Picture:
    """One panel per requirement: the plan's value as a bar, the target as a dashed line (the
    numbers are in the metrics table, so the panels print none)."""
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
        ax.set_title(f"{name} ({rel} target)")
        ax.set_xlabel(unit)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    ok = sum(r[5] for r in rows)
    caption = (f"Requirements: the plan's value (bar; green = met, red = violated) against the "
               f"target (dashed); {ok} of {len(rows)} met (values and targets: metrics table).")
    return Picture("requirements", title, caption, fig)
