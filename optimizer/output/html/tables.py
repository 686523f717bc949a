"""The HTML pieces every report page shares: the style sheet, escaping (every text that comes
from a file goes through ``escape``), values as the plan states them, tables, a picture as an
embedded PNG, and the expert and GPU tables of one replica. No drawing, no data gathering."""

from __future__ import annotations

import html
import json
import re

from optimizer.output.html.canvas import Picture, png_base64
from optimizer.output.html.data import MEMORY_PARTS, ReportData, is_number, range_text

CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 1.5em auto; max-width: 1160px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 2px 7px; text-align: left; vertical-align: top; }
td { overflow-wrap: anywhere; }
code { overflow-wrap: anywhere; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, p.missing { font-style: italic; color: #444; }
p.note { background: #fff4d6; padding: 4px 8px; } .bad { color: #b00; font-weight: bold; }
.tables { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
"""


def escape(x: object) -> str:
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


def table(headers: list[str], rows: list[list[object]], caption: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td{_cell_class(c)}>{escape(c)}</td>" for c in row) + "</tr>\n"
                   for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"


def _cell_class(c: object) -> str:
    if isinstance(c, str) and (c.startswith("differs") or c.endswith("VIOLATED")):
        return ' class="bad"'
    numeric = isinstance(c, (int, float)) or (isinstance(c, str) and re.fullmatch(r"-?[0-9.,e+-]+", c))
    return ' class="num"' if numeric else ""


def stated_text(value: object) -> str:
    """A stated value once: numbers exactly as plan.json writes them, other values readable."""
    return exact(value) if is_number(value) else readable(value)



def placement_table(data: ReportData) -> str:
    """Experts of each EP rank, one row per rank (the lists wrap, so the page keeps its width);
    consecutive MoE layers with the same placement share their rows."""
    if not data.placement:
        return ""
    groups: list[tuple[list[int], list[list[int]]]] = []
    for layer, ranks in data.placement.items():
        if groups and groups[-1][1] == ranks and groups[-1][0][-1] == layer - 1:
            groups[-1][0].append(layer)
        else:
            groups.append(([layer], ranks))
    ep = max(len(r) for r in data.placement.values())
    rows = [[range_text(ls), r, ", ".join(map(str, experts))]
            for ls, ranks in groups for r, experts in enumerate(ranks)]
    experts = table(["MoE layer(s)", "EP rank", "experts"], rows,
                    "Experts held by each EP rank, per MoE layer")
    opened = " open" if len(rows) <= 64 else ""
    return (f"<details{opened}><summary>Experts per EP rank and layer ({len(data.placement)} MoE layers, "
            f"EP {ep})</summary>\n{experts}</details>\n")


def gpu_table(data: ReportData) -> str:
    names = ["rank", "node", "local_rank", "stage", "tp_rank", "dp_rank", "ep_rank", "etp_rank", "edp_rank"]
    rows = []
    for i, s in enumerate(data.slots):
        mem = [f"{x:.2f}" for x in data.memory[i]] + [f"{sum(data.memory[i]):.2f}"] if data.memory else []
        rows.append([getattr(s, n) for n in names] + mem)
    headers = names + ([f"{p} GB" for p in MEMORY_PARTS] + ["total GB"] if data.memory else [])
    opened = " open" if len(rows) <= 16 else ""
    return (f"<details{opened}><summary>GPU table ({len(rows)} GPUs)</summary>\n"
            f"{table(headers, rows, 'Ranks and memory of every GPU')}</details>\n")


def picture_html(p: Picture) -> str:
    head = f'<h2 id="{escape(p.anchor)}">{escape(p.title)}</h2>\n'
    if p.fig is None:
        return head + f'<p class="missing">{escape(p.caption)}</p>\n'
    return (head + f'<figure><img alt="{escape(p.title)}" src="data:image/png;base64,{png_base64(p.fig)}">'
            f"<figcaption>{escape(p.caption)}</figcaption></figure>\n")
