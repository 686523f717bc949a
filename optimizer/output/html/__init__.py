"""``moeopt report``: one self-contained HTML page with pictures and tables of a plan.

Data flow: plan JSON (+ instance) -> ``data.collect`` (a ``ReportData``: the plan's own figures,
plus the recomputed evaluation and expert loads when an instance is given) -> ``figures.pictures``
(matplotlib figures on the Agg canvas: ``maps``, ``placement``, ``bars``, ``pareto``) ->
``page.page_html`` (renders each figure to a base64 PNG with ``canvas.png_base64``, adds the tables) ->
``render_report`` / ``write_report`` (``write_atomic``).

Nothing in the page points outside it: no scripts, links, fonts or external images. Every
text that comes from a file is escaped with ``html.escape``. The page fits a 1400 px window
(long tables wrap), each value is printed once (tables hold the numbers, pictures the
shapes), a picture with nothing to show (uniform loads, equal expert counts) is a sentence,
large maps collapse into heat maps and tick labels are thinned until they no longer overlap
(checked on the drawn figure).
"""

from optimizer.output.html.bars import memory_bars, requirement_bars
from optimizer.output.html.canvas import Picture, png_base64, tick_boxes
from optimizer.output.html.data import ReportData, collect, rank_loads
from optimizer.output.html.figures import pictures
from optimizer.output.html.maps import cluster_map, load_map
from optimizer.output.html.page import default_report_path, page_html, render_report, write_report
from optimizer.output.html.placement import placement_map

__all__ = ["ReportData", "Picture", "collect", "pictures", "page_html", "render_report", "write_report",
           "default_report_path", "rank_loads", "tick_boxes", "png_base64", "cluster_map", "placement_map",
           "load_map", "memory_bars", "requirement_bars"]
