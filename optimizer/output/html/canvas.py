"""The drawing surface the pictures share: ``Picture`` (a figure and its caption), ``figure``
(an Agg figure of the page width), tick fitting (``fit_ticks`` estimates, ``png_base64`` checks
the drawing and thins overlapping labels) and the PNG encoding the page embeds.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import matplotlib
import PIL.Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator

DPI = 100
WIDTH_IN = 11.0
RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
      "font.family": "DejaVu Sans", "svg.fonttype": "path"}


@dataclass
class Picture:
    """One figure with its one-line caption, or only a line saying why there is none."""

    anchor: str
    title: str
    caption: str
    fig: Figure | None = None


def figure(height_in: float) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, min(max(height_in, 2.2), 14.0)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def overlap(boxes: list, pad: float = 1.0) -> bool:
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


def fit_ticks(fig: Figure, specs: list[tuple]) -> None:
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
                if len(texts) > 1 and overlap([t.get_window_extent(renderer) for t in texts]):
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


def out_of_layout(artists) -> None:
    """Bars stay inside their axes: leave them out of the layout's bounding boxes (faster)."""
    for artist in artists:
        artist.set_in_layout(False)


def categorical(n: int) -> ListedColormap:
    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"
    cmap = matplotlib.colormaps[name]
    if n <= 20:
        return ListedColormap(cmap.colors[:n])
    return ListedColormap(cmap([i / max(n - 1, 1) for i in range(n)]))
