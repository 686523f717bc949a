"""The HTML page: tables of the plan, each picture as an embedded PNG, escaping of every text
that comes from a file; ``render_report`` / ``write_report`` (``write_atomic``) and the default
path ``results/<instance>/report.html``."""

from __future__ import annotations

from pathlib import Path

from optimizer.errors import InputError
from optimizer.inputs.files import write_atomic
from optimizer.inputs.schema import Instance
from optimizer.output.html.canvas import Picture
from optimizer.output.html.data import NAME_RE, ReportData, collect, is_number, range_text, requirement_rows
from optimizer.output.html.figures import pictures
from optimizer.output.html.tables import (
    CSS,
    escape,
    exact,
    gpu_table,
    picture_html,
    placement_table,
    readable,
    stated_text,
    table,
)

CLAIM_TOLERANCE = 0.01           # a stated metric "holds" within 1 % of the recomputed one


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
    out = ['<div class="tables">', table(["plan", "value"], plan_rows, "Plan"),
           table(["degree", "value"], deg_rows, "Parallel degrees")]
    if stage_rows:
        out.append(table(["stage", "layers", "count"], stage_rows, "Pipeline stages"))
    out.append("</div>")
    return "".join(out) + _metric_table(data) + _solver_table(data) + _check_table(data)


# requirement check -> the metric it judges (throughput: by the unit's scope)
REQUIREMENT_METRIC = {"memory_per_gpu": "max_memory_gb", "ttft": "ttft_s", "tpot": "tpot_ms",
                      "throughput": "throughput_tokens_per_ms"}


def _requirement_metric(name: str, unit: str) -> str | None:
    metric = REQUIREMENT_METRIC.get(name)
    return metric + "_per_gpu" if metric and unit.endswith("/GPU") else metric


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
        row = [k, stated_text(stated[k]) if k in stated else readable(computed[k])]
        if computed:
            row.append(_check(stated[k], computed.get(k)) if k in stated else "recomputed")
        if judged:
            row.append(judged.get(k, ""))
        rows.append(row)
    note = (" (value: as plan.json states it; check: recomputed from the plan and the instance, "
            "as moeopt check does" + ("; requirement: the instance's target, judged on the "
                                      "recomputed figure)" if judged else ")")
            if computed else " (as plan.json states them)")
    return table(headers, rows, "Metrics" + note)


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
    rows = [[k, stated_text(solver.get(k))] for k in keys]
    return table(["solver", "value"], rows, "Solver: status, bound and gap")


def _check_table(data: ReportData) -> str:
    """Rules the plan breaks, and requirements on figures the metrics table does not list."""
    listed = set(data.doc.get("metrics") or {}) | set(data.ev.metrics() if data.ev else {})
    rows = [[n, readable(v), f"{rel} {t:g}", u, "ok" if ok else "VIOLATED"]
            for n, v, t, u, rel, ok in requirement_rows(data) if _requirement_metric(n, u) not in listed]
    rows += [[c.name, "no", "", "rule", "VIOLATED"] for c in data.structure if not c.ok]
    if not rows:
        return ""
    return table(["requirement", "value", "target", "unit", "verdict"], rows, "Requirements")


def render_report(inst: Instance | None, plan_json: dict, results_dir: str | Path = "results",
                  source: str | None = None) -> str:
    """The whole HTML page for a plan (and optionally its instance); a disaggregated plan's
    page is ``disagg.disagg_page``."""
    from optimizer.output.html.disagg import disagg_page
    from optimizer.plan.pools import is_disagg
    if is_disagg(plan_json):
        return disagg_page(inst, plan_json, source)
    data = collect(inst, plan_json)
    return page_html(data, pictures(data, results_dir), source)


def page_html(data: ReportData, pics: list[Picture], source: str | None = None) -> str:
    """The page: title, notes, the plan's tables, then each picture (rendered here)."""
    title = f"moeopt report: {data.name or 'plan'}"
    parts = ["<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
             f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
             f"<h1>{escape(title)}</h1>\n"]
    if source:
        parts.append(f"<p>plan file: <code>{escape(source)}</code>"
                     + ("; with its instance (--instance)" if data.inst else
                        "; no instance given (--instance)") + "</p>\n")
    parts += [f'<p class="note">Note: {escape(n)}</p>\n' for n in data.notes]
    parts.append(_summary_tables(data))
    for p in pics:
        parts.append(picture_html(p))
        if p.anchor == "placement":
            parts += [placement_table(data), gpu_table(data)]
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
