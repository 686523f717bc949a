"""Pareto plots of the sweep/Pareto tables found under ``results/<instance>/``."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.lines
from matplotlib.patches import Patch

from optimizer.output.html.canvas import Picture, categorical, figure
from optimizer.output.html.data import NAME_RE, PARETO_NEEDS, TABLE_FILES, ReportData, read_table, sweep_points

MARKERS = {"pareto": dict(marker="o", edgecolors="black", linewidths=1.2, s=46, zorder=3),
           "dominated": dict(marker="o", facecolors="none", s=40, zorder=2),
           "infeasible": dict(marker="x", s=40, zorder=2)}


def pareto_plots(data: ReportData, results_dir: str | Path) -> list[Picture]:
    """A Pareto plot per sweep/Pareto table found under ``results/<instance>/``."""
    folder = Path(results_dir) / data.name if data.name and NAME_RE.fullmatch(data.name) else None
    found = [folder / f for f in TABLE_FILES if folder is not None and (folder / f).is_file()]
    if not found:
        where = f"{folder}/" if folder else "results/<instance>/"
        return [Picture("pareto", "Pareto front", f"No sweep or Pareto table found ({where}"
                        f"{' or '.join(TABLE_FILES)}).")]
    return [_pareto_plot(data, path) for path in found]


def _pareto_plot(data: ReportData, path: Path) -> Picture:
    """Two views of a sweep/Pareto table: TTFT vs throughput per GPU, and the other two
    Pareto objectives (communication vs load imbalance); colour = GPU count."""
    rows = read_table(path)
    anchor, title = f"pareto-{path.stem}", f"Pareto front ({path.name})"
    if isinstance(rows, str):
        return Picture(anchor, title, rows)
    missing = [c for c in PARETO_NEEDS if not rows or c not in rows[0]]
    if missing:
        return Picture(anchor, title, f"{path} has no rows or lacks the columns "
                       f"{', '.join(missing)}; no plot.")
    pts = sweep_points(data, rows)
    counts = sorted({p["num_gpus"] for p in pts if not math.isnan(p["num_gpus"])})
    cmap = categorical(max(len(counts), 1))
    colour = {n: cmap(i) for i, n in enumerate(counts)}
    fig = figure(3.8)
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
