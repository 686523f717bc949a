"""The report of a disaggregated plan (``"mode": "disagg"``, docs/plan-file.md): both pools
and the KV transfer between them, in the page style of ``page``.

Page: the plan's head, a table of the pools (per pool: replicas, GPUs per replica, GPUs,
first global ranks, degrees, knobs), the transfer as the plan states it (link, links, bytes
per request, seconds) with its link and link count checked against the layout rule
(``plan.pools.transfer_link``), the plan's metrics and solver block; a deployment map (every
GPU of the cluster coloured by pool replica, ``plan.pools.replica_first_ranks``); then per
pool the pictures of one replica (cluster map, expert placement, memory, routed loads with an
instance), its stages and GPU table. Each pool is read by the one plan reader
(``plan.pools.read_pools``); with an instance the pools must fit it and the routed loads come
from it. Recomputing a pool's service figures is the planner's job (``moeopt check``), not
the report's: the metrics are shown as the plan states them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from optimizer.costs.expert_loads import expert_loads
from optimizer.inputs.schema import Instance
from optimizer.output.html.bars import memory_bars
from optimizer.output.html.canvas import RC, Picture, figure, fit_ticks
from optimizer.output.html.data import ReportData, collect, is_number, range_text
from optimizer.output.html.maps import cluster_map, load_map
from optimizer.output.html.placement import placement_map
from optimizer.output.html.tables import (
    CSS,
    escape,
    gpu_table,
    picture_html,
    placement_table,
    stated_text,
    table,
)
from optimizer.plan.pools import Pool, read_pools, replica_doc, replica_first_ranks, transfer_link

ROLE_COLOURS = {"prefill": ("#1f77b4", "#9ecae1"), "decode": ("#d62728", "#fc9272")}  # replica shades
LABELLED_GPUS = 256
KNOBS = ("max_running_requests", "prefill_chunk_tokens", "prefill_micro_batches", "decode_micro_batches")


@dataclass
class PoolView:
    """One pool: what the plan says, its first global ranks and one replica's report data."""

    pool: Pool
    first_ranks: tuple[int, ...]
    data: ReportData


def collect_pools(inst: Instance | None, doc: dict, source: str = "plan") -> tuple[list[PoolView], list[str]]:
    """The pools (prefill first) and the page's notes; InputError (exit 2) on a broken plan."""
    pools = read_pools(doc, inst, source)
    firsts = replica_first_ranks({p.role: (p.replicas, p.gpus_per_replica) for p in pools})
    notes = []
    if inst is not None and doc.get("instance") not in (None, inst.name):
        notes.append(f"the plan names instance {doc.get('instance')!r} but the instance given is {inst.name!r}")
    views = []
    for p in pools:
        data = collect(None, replica_doc(doc, p.doc))
        if inst is not None:  # the pool fits the instance (read_pools checked it): its loads
            data.inst = inst
            data.loads = dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))
        data.notes = []
        views.append(PoolView(p, firsts[p.role], data))
    return views, notes


def _pool_rows(views: list[PoolView]) -> list[list[object]]:
    rows = []
    for v in views:
        p, d = v.pool, v.pool.plan.deg
        knobs = [getattr(p.knobs, k) if p.knobs else "-" for k in KNOBS]
        rows.append([p.role, p.replicas, p.gpus_per_replica, p.num_gpus, _ranks_text(v.first_ranks),
                     d.tp, d.pp, d.dp, d.ep, d.etp, d.edp, *knobs])
    return rows


def _ranks_text(firsts: tuple[int, ...]) -> str:
    return ", ".join(map(str, firsts[:8])) + (f", ... ({len(firsts)})" if len(firsts) > 8 else "")


def _transfer_rows(doc: dict, views: list[PoolView], gpus_per_node: int) -> tuple[list[list[object]], str]:
    """(rows, note): the plan's transfer block, its link and links checked against the layout."""
    stated = doc.get("transfer") if isinstance(doc.get("transfer"), dict) else {}
    total = sum(v.pool.num_gpus for v in views)
    link = transfer_link(total, gpus_per_node)
    links = min(v.pool.gpus_per_replica for v in views)
    rows = [_derived_row("link", stated, link, "the layout gives"),
            _derived_row("links", stated, links, "min of the replicas' GPUs gives")]
    for key in ("kv_bytes_per_request", "transfer_s"):
        rows.append([key, stated_text(stated[key]) if key in stated else "-", "-", "as the plan states it"])
    rows += [[k, stated_text(v), "-", "as the plan states it"] for k, v in stated.items()
             if k not in ("link", "links", "kv_bytes_per_request", "transfer_s")]
    note = ("" if stated else
            "The plan states no transfer block (a hand-written plan?): bytes and seconds are not shown; "
            "docs/plan-file.md gives the formula.")
    return rows, note


def _derived_row(key: str, stated: dict, derived: object, rule: str) -> list[object]:
    """A transfer figure the layout determines: as stated, as derived, and whether they agree."""
    if key not in stated:
        return [key, "-", derived, "derived"]
    check = "holds" if stated[key] == derived else f"differs: {rule} {derived}"
    return [key, stated_text(stated[key]), derived, check]


def deployment_map(views: list[PoolView], gpus_per_node: int) -> Picture:
    """Every GPU of the deployment (nodes x local ranks) coloured by pool, replicas in
    alternating shades, labelled with the pool and replica while they fit."""
    owner: dict[int, tuple[str, int]] = {}
    for v in views:
        for r, first in enumerate(v.first_ranks):
            for g in range(first, first + v.pool.gpus_per_replica):
                owner[g] = (v.pool.role, r)
    total = len(owner)
    nodes = math.ceil(total / gpus_per_node)
    colours = [c for role in ("prefill", "decode") for c in ROLE_COLOURS[role]]
    grid = [[math.nan] * gpus_per_node for _ in range(nodes)]
    for g, (role, r) in owner.items():
        grid[g // gpus_per_node][g % gpus_per_node] = 2 * (role == "decode") + r % 2
    labelled = total <= LABELLED_GPUS and nodes <= 32
    fig = figure(nodes * (0.6 if labelled else min(0.35, 9.0 / nodes)) + 1.3)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap=ListedColormap(colours), vmin=-0.5, vmax=3.5, aspect="auto", interpolation="nearest")
    ax.set_xlabel("GPU in node (local rank)")
    ax.set_ylabel("node")
    handles = [Patch(color=ROLE_COLOURS[v.pool.role][0], label=f"{v.pool.role}: {v.pool.replicas} x "
                     f"{v.pool.gpus_per_replica} GPUs") for v in views]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    if labelled:
        for g, (role, r) in owner.items():
            ax.text(g % gpus_per_node, g // gpus_per_node, f"{role[0].upper()}{r}\nGPU {g}", ha="center",
                    va="center", fontsize=8, in_layout=False)
    fit_ticks(fig, [(ax, "x", list(range(gpus_per_node)), [str(c) for c in range(gpus_per_node)]),
                     (ax, "y", list(range(nodes)), [f"node {n}" for n in range(nodes)])])
    caption = (f"{total} GPUs on {nodes} node(s) of {gpus_per_node}: each pool's replicas in alternating "
               "shades" + (" (P = prefill, D = decode, then the replica index)" if labelled else "")
               + "; replicas laid out in decreasing size, prefill first at equal size.")
    return Picture("deployment", "Deployment map: prefill and decode pools", caption, fig)


def _pool_pictures(v: PoolView) -> list[Picture]:
    role = v.pool.role
    memory = (memory_bars(v.data) if v.data.memory is not None else
              Picture("memory", "Memory per GPU", "The plan lists no memory per GPU for this pool's "
                      "GPUs (gpus[].memory_gb), so there are no bars; its metrics table shows any "
                      "figure the plan states."))
    pics = [cluster_map(v.data), placement_map(v.data), memory]
    if v.data.inst is not None:
        pics.append(load_map(v.data))
    for p in pics:
        p.anchor, p.title = f"{role}-{p.anchor}", f"{role.capitalize()} pool: {p.title[0].lower()}{p.title[1:]}"
    pics[0].caption = f"One {role} replica (ranks 0..{v.pool.gpus_per_replica - 1} of the replica): " + pics[0].caption
    return pics


def _pool_section(v: PoolView) -> str:
    p = v.pool
    head = (f'<h2 id="{p.role}">{escape(p.role.capitalize())} pool: {p.replicas} replica(s) of '
            f"{p.gpus_per_replica} GPU(s), {p.num_gpus} GPUs</h2>\n")
    stage_rows = [[j, range_text(ls), len(ls)] for j, ls in v.data.stages]
    metrics = p.doc.get("metrics") if isinstance(p.doc.get("metrics"), dict) else {}
    tables = ['<div class="tables">']
    if stage_rows:
        tables.append(table(["stage", "layers", "count"], stage_rows, f"{p.role} pipeline stages"))
    if metrics:
        tables.append(table(["metric", "value"], [[k, stated_text(x)] for k, x in metrics.items()],
                             f"{p.role} pool metrics (as the plan states them)"))
    tables.append("</div>")
    parts = [head, "".join(tables)]
    with matplotlib.rc_context(RC):
        pics = _pool_pictures(v)
    for pic in pics:
        parts.append(picture_html(pic))
        if pic.anchor.endswith("placement"):
            parts += [placement_table(v.data), gpu_table(v.data)]
    return "".join(parts)


def disagg_page(inst: Instance | None, doc: dict, source: str | None = None) -> str:
    """The whole HTML page of a disaggregated plan."""
    views, notes = collect_pools(inst, doc)
    gpn = inst.hardware.gpus_per_node if inst is not None else views[0].pool.plan.gpus_per_node
    name = inst.name if inst is not None else str(doc.get("instance") or "plan")
    title = f"moeopt report: {name} (disaggregated)"
    total = sum(v.pool.num_gpus for v in views)
    parts = ["<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
             f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n", f"<h1>{escape(title)}</h1>\n"]
    if source:
        parts.append(f"<p>plan file: <code>{escape(source)}</code>"
                     + ("; with its instance (--instance)" if inst else "; no instance given (--instance)") + "</p>\n")
    parts += [f'<p class="note">Note: {escape(n)}</p>\n' for n in notes]
    plan_rows = [["instance", stated_text(doc.get("instance", name))], ["status", stated_text(doc.get("status", "n/a"))],
                 ["mode", "disagg"], ["num_gpus", total], ["nodes", math.ceil(total / gpn)], ["GPUs per node", gpn]]
    pool_headers = ["pool", "replicas", "GPUs/replica", "GPUs", "first ranks", "tp", "pp", "dp", "ep", "etp",
                    "edp", "max_running", "chunk tokens", "prefill mb", "decode mb"]
    transfer_rows, transfer_note = _transfer_rows(doc, views, gpn)
    parts += ['<div class="tables">', table(["plan", "value"], plan_rows, "Plan"),
              table(["transfer", "stated", "layout rule", "check"], transfer_rows,
                     "KV transfer, prefill -> decode"), "</div>\n",
              table(pool_headers, _pool_rows(views), "Pools (degrees and knobs are per replica)")]
    if transfer_note:
        parts.append(f'<p class="missing">{escape(transfer_note)}</p>\n')
    metrics = doc.get("metrics") if isinstance(doc.get("metrics"), dict) else {}
    parts.append(table(["metric", "value"], [[k, stated_text(v)] for k, v in metrics.items()],
                        "Metrics (as the plan states them; moeopt simulate checks them)")
                 if metrics else '<p class="missing">The plan states no metrics.</p>\n')
    solver = doc.get("solver")
    parts.append(table(["solver", "value"], [[k, stated_text(v)] for k, v in solver.items()
                                              if is_number(v) or isinstance(v, str)], "Solver")
                 if isinstance(solver, dict) else '<p class="missing">The plan has no solver block '
                 "(hand-written plan?).</p>\n")
    with matplotlib.rc_context(RC):
        overview = deployment_map(views, gpn)
    parts.append(picture_html(overview))
    parts += [_pool_section(v) for v in views]
    parts.append("</body>\n</html>\n")
    return "".join(parts)
