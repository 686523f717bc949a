"""The HTML page: tables of the plan, each picture as an embedded PNG, escaping of every text
that comes from a file; ``render_report`` / ``write_report`` (``write_atomic``) and the default
path ``results/<instance>/report.html``."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from optimizer.errors import InputError
from optimizer.inputs.files import write_atomic
from optimizer.inputs.schema import Instance
from optimizer.output.html.canvas import Picture, png_base64
from optimizer.output.html.data import (
    MEMORY_PARTS,
    NAME_RE,
    ReportData,
    collect,
    is_number,
    range_text,
    requirement_rows,
)
from optimizer.output.html.figures import pictures

CLAIM_TOLERANCE = 0.01           # a stated metric "holds" within 1 % of the recomputed one
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
    if isinstance(c, str) and (c.startswith("differs") or c.endswith("VIOLATED")):
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
    plan_rows = [[k, exact(v) if is_number(v) else readable(v)] for k, v in plan_rows]
    given = doc.get("degrees") if isinstance(doc.get("degrees"), dict) else {}
    deg_rows = [[k, exact(given[k]) if k in given else f"{getattr(d, k)} (derived)"]
                for k in ("tp", "pp", "dp", "ep", "etp", "edp")]
    stage_rows = [[j, range_text(ls), len(ls)] for j, ls in data.stages]
    out = ['<div class="tables">', _table(["plan", "value"], plan_rows, "Plan"),
           _table(["degree", "value"], deg_rows, "Parallel degrees")]
    if stage_rows:
        out.append(_table(["stage", "layers", "count"], stage_rows, "Pipeline stages"))
    out.append("</div>")
    return "".join(out) + _metric_table(data) + _solver_table(data) + _check_table(data)


# requirement check -> the metric it judges (throughput: by the unit's scope)
REQUIREMENT_METRIC = {"memory_per_gpu": "max_memory_gb", "ttft": "ttft_s", "tpot": "tpot_ms",
                      "throughput": "throughput_tokens_per_ms"}


def _requirement_metric(name: str, unit: str) -> str | None:
    metric = REQUIREMENT_METRIC.get(name)
    return metric + "_per_gpu" if metric and unit.endswith("/GPU") else metric


def _stated_text(value: object) -> str:
    """A stated value once: numbers exactly as plan.json writes them, other values readable."""
    return exact(value) if is_number(value) else readable(value)


def _metric_table(data: ReportData) -> str:
    """Each metric once: the plan's value (else the recomputed one), whether the recomputed
    figure agrees, and the requirement that judges it."""
    stated = data.doc.get("metrics") if isinstance(data.doc.get("metrics"), dict) else {}
    computed = data.ev.metrics() if data.ev is not None else {}
    names = list(stated) + [k for k in computed if k not in stated]
    if not names:
        return ('<p class="missing">The plan states no metrics and no instance was given to '
                "compute them.</p>")
    judged = {_requirement_metric(n, u): f"{rel} {t:g} {u}: {'ok' if ok else 'VIOLATED'}"
              for n, v, t, u, rel, ok in requirement_rows(data)}
    headers = (["metric", "value"] + (["check"] if computed else [])
               + (["requirement"] if judged else []))
    rows = []
    for k in names:
        row = [k, _stated_text(stated[k]) if k in stated else readable(computed[k])]
        if computed:
            row.append(_check(stated[k], computed.get(k)) if k in stated else "recomputed")
        if judged:
            row.append(judged.get(k, ""))
        rows.append(row)
    note = (" (value: as plan.json states it; check: recomputed from the plan and the instance, "
            "as moeopt check does" + ("; requirement: the instance's target, judged on the "
                                      "recomputed figure)" if judged else ")")
            if computed else " (as plan.json states them)")
    return _table(headers, rows, "Metrics" + note)


def _check(stated: object, ref: float | None) -> str:
    if ref is None:
        return "not derivable"
    verdict = _verdict(stated, ref)
    return f"differs: recomputed {readable(ref)}" if verdict == "differs" else verdict


def _verdict(stated: object, ref: float | None) -> str:
    """'holds' when the stated figure is within CLAIM_TOLERANCE of the recomputed one."""
    if ref is None or not is_number(stated):
        return "-"
    close = abs(stated - ref) <= CLAIM_TOLERANCE * abs(ref) or abs(stated - ref) < 1e-9
    return "holds" if close else "differs"


def _solver_table(data: ReportData) -> str:
    solver = data.doc.get("solver")
    if not isinstance(solver, dict):
        return '<p class="missing">The plan has no solver block (hand-written plan?).</p>'
    keys = ["status", "objective", "bound", "gap", "wall_s"]
    keys += [k for k in solver if k not in keys]
    rows = [[k, _stated_text(solver.get(k))] for k in keys]
    return _table(["solver", "value"], rows, "Solver: status, bound and gap")


def _check_table(data: ReportData) -> str:
    """Rules the plan breaks, and requirements on figures the metrics table does not list."""
    listed = set(data.doc.get("metrics") or {}) | set(data.ev.metrics() if data.ev else {})
    rows = [[n, readable(v), f"{rel} {t:g}", u, "ok" if ok else "VIOLATED"]
            for n, v, t, u, rel, ok in requirement_rows(data) if _requirement_metric(n, u) not in listed]
    rows += [[c.name, "no", "", "rule", "VIOLATED"] for c in data.structure if not c.ok]
    if not rows:
        return ""
    return _table(["requirement", "value", "target", "unit", "verdict"], rows, "Requirements")


def _placement_table(data: ReportData) -> str:
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
    table = _table(["MoE layer(s)", "EP rank", "experts"], rows,
                   "Experts held by each EP rank, per MoE layer")
    opened = " open" if len(rows) <= 64 else ""
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
    parts = ["<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
             f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
             f"<h1>{_e(title)}</h1>\n"]
    if source:
        parts.append(f"<p>plan file: <code>{_e(source)}</code>"
                     + ("; with its instance (--instance)" if data.inst else
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
