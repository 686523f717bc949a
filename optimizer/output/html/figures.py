"""Every picture of the page, in page order (each family lives in its own module)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from optimizer.output.html.bars import memory_bars, requirement_bars
from optimizer.output.html.canvas import RC, Picture
from optimizer.output.html.data import ReportData
from optimizer.output.html.maps import cluster_map, load_map
from optimizer.output.html.pareto import pareto_plots
from optimizer.output.html.placement import placement_map


def pictures(data: ReportData, results_dir: str | Path = "results") -> list[Picture]:
    """Every picture of the page, in page order."""
    with matplotlib.rc_context(RC):
        out = [cluster_map(data), placement_map(data), memory_bars(data), load_map(data),
               requirement_bars(data)]
        out += pareto_plots(data, results_dir)
    return out
