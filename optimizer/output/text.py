"""Readable text for plans and checks (reshaping only; every figure comes from evaluate)."""

from __future__ import annotations

from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.units import LOAD_SCALE
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Evaluation, Plan
from optimizer.plan.lines import check_lines, memory_lines, metric_lines


def _ranges(layers: tuple[int, ...]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


def degrees_line(plan: Plan, ev: Evaluation, inst: Instance) -> str:
    d = plan.deg
    nodes = len({s.node for s in plan.slots})
    return (f"GPUs {d.num_gpus} on {nodes} node(s) | attention TP {d.tp} x DP {d.dp} | "
            f"MoE EP {d.ep} x ETP {d.etp} x EDP {d.edp} | PP {d.pp} | micro-batches "
            f"{d.micro_batches} of {ev.costs.seqs_per_micro_batch} sequence(s) per DP replica")


def stage_lines(plan: Plan) -> list[str]:
    p = len(plan.stages)
    out = []
    for j, layers in enumerate(plan.stages):
        extra = (" + embedding" if j == 0 else "") + (" + LM head" if j == p - 1 else "")
        out.append(f"  stage {j}: layers {_ranges(layers)} ({len(layers)} layers){extra}")
    return out


def placement_lines(plan: Plan, inst: Instance) -> list[str]:
    loads = dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))
    out = []
    for layer, ranks in sorted(plan.placement.items()):
        rank_loads = [sum(loads[layer][x] for x in r) for r in ranks]
        mean = LOAD_SCALE / len(ranks)
        cells = " ".join(f"r{r}:{','.join(map(str, xs))}" for r, xs in enumerate(ranks))
        out.append(f"  layer {layer:>3}: hot/mean {max(rank_loads) / mean:5.3f} | {cells}")
    return out


def placement_summary_lines(plan: Plan, inst: Instance, columns: int = 3) -> list[str]:
    """Compact placement view: per MoE layer, the hottest EP rank's share of the layer's routed
    tokens and the balancedness (mean rank load / hottest, 1 = perfect); consecutive layers
    with the same two figures (as printed) are folded into one cell, ``columns`` cells a line."""
    loads = dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))
    cells: list[tuple[list[int], str]] = []
    for layer, ranks in sorted(plan.placement.items()):
        hot = max(sum(loads[layer][x] for x in r) for r in ranks)
        text = f"hot {hot / LOAD_SCALE:6.1%}  bal {LOAD_SCALE / len(ranks) / hot:5.3f}"
        if cells and cells[-1][1] == text and cells[-1][0][-1] == layer - 1:
            cells[-1][0].append(layer)
        else:
            cells.append(([layer], text))
    rendered = [f"{'layers' if len(ls) > 1 else 'layer'} {_ranges(tuple(ls)):<7} {text}" for ls, text in cells]
    return ["  " + "   ".join(rendered[i:i + columns]) for i in range(0, len(rendered), columns)]


def _runs(numbers: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and runs[-1][-1] == n - 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(_ranges(tuple(r)) for r in runs)


def status_note(solver: dict, unproven_layers: list[int] | None = None) -> str | None:
    """Why a "feasible" plan is not proven optimal, and whether more --time-limit helps;
    None for an optimal plan. ``solver`` is the plan's solver block (``cp_sat_status``: the
    objective phase; ``makespan_status``: the makespan phase, absent when it did not run);
    ``unproven_layers``: MoE layers whose placement proof ran out of its deterministic budget
    (a fixed amount of CP-SAT work, not wall time: a longer time limit does not change it)."""
    if solver.get("status") == "optimal":
        return None
    gap = solver.get("gap")
    gap_text = f"objective gap {gap:.1%}" if gap else "objective gap 0"
    if solver.get("interrupted"):
        return f"Ctrl-C stopped the search ({gap_text}); run it again to finish"
    if solver.get("greedy"):
        return (f"CP-SAT found no plan within the time limit, so this is the greedy warm start "
                f"({gap_text}); more --time-limit helps")
    reasons, helps = [], False
    if solver.get("cp_sat_status") not in (None, "optimal"):
        reasons.append(f"CP-SAT stopped at the time limit in the objective phase ({gap_text})")
        helps = True
    elif solver.get("makespan_status") is None:
        reasons.append("the objective is proven, but the time limit ended before the makespan phase "
                       "ran (the batch makespan is not minimized)")
        helps = True
    elif solver["makespan_status"] != "optimal":
        reasons.append(f"the objective is proven, but CP-SAT stopped at the time limit in the makespan "
                       f"phase (makespan {solver['makespan_ms']:.3f} ms, bound "
                       f"{solver['makespan_bound_ms']:.3f} ms)")
        helps = True
    if unproven_layers:
        reasons.append(f"the placements of MoE layer(s) {_runs(unproven_layers)} are the best found "
                       f"within their fixed deterministic proof budget, not proven optimal ({gap_text}); "
                       f"more --time-limit does not help there")
    if not reasons:
        return f"not proven optimal ({gap_text})"
    return "; ".join(reasons) + ("; more --time-limit helps" if helps else "")


def solver_lines(solver: dict) -> list[str]:
    s = solver
    gap = "n/a" if s["gap"] is None else f"{s['gap']:.4f}"
    line = (f"  status {s['status']}, objective {s['objective']:.3f} ms (time lost per GPU to "
            f"communication, expert imbalance and pipeline idling), bound {s['bound']:.3f} ms, "
            f"gap {gap}, wall {s['wall_s']:.2f} s, "
            f"{s['configurations']} configurations")
    out = [line]
    if s.get("makespan_status"):
        out.append(f"  then makespan: status {s['makespan_status']}, {s['makespan_ms']:.3f} ms "
                   f"(bound {s['makespan_bound_ms']:.3f} ms)")
    return out


def placement_section(plan: Plan, inst: Instance, expert_ids: bool) -> list[str]:
    """Every expert id per EP rank (``expert_ids``), else the compact per-layer view."""
    if expert_ids:
        return ["Experts per EP rank (rN: expert ids), hottest-rank load / mean"] + placement_lines(plan, inst)
    return ([f"Expert placement, EP {plan.deg.ep} (hot: hottest rank's share of the layer's routed "
             f"tokens; bal: mean / hottest; -v: expert ids)"]
            + placement_summary_lines(plan, inst))


def plan_text(inst: Instance, plan: Plan, ev: Evaluation, status: str, solver: dict | None,
              expert_ids: bool = True, note: str | None = None) -> str:
    """The whole readable plan; ``note`` (``status_note``) goes under the status line."""
    lines = [f"moeopt plan for {plan.instance}: {status}"]
    if note:
        lines.append(f"  why: {note}")
    lines += [degrees_line(plan, ev, inst), "Stages"]
    lines += stage_lines(plan)
    lines += placement_section(plan, inst, expert_ids)
    lines += ["Memory per GPU"] + memory_lines(ev, inst.memory_limit_gb)
    lines += ["Requirements"] + check_lines(ev.checks)
    lines += ["Metrics"] + metric_lines(ev)
    if solver:
        lines += ["Solver"] + solver_lines(solver)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- tables of deployments
# (``moeopt pareto`` and ``moeopt sweep`` in table format: human units; CSV and JSON keep
# the raw columns)

def si(value: float) -> str:
    """3 significant digits with k/M/G: 790900 -> '791k'."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def duration(seconds: float) -> str:
    """'1.66 s', '578 ms', '95.2 us' (3 significant digits)."""
    if abs(seconds) >= 1 or seconds == 0:
        return f"{seconds:.3g} s"
    if abs(seconds) >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def _yes(value) -> str:
    return "yes" if bool(value) else "no"


# column -> (header, cell); only the columns a table has are shown, in its order
HUMAN_COLUMNS = {
    "num_gpus": ("GPUs", lambda v: f"{int(v)}"),
    **{k: (k.upper(), lambda v: f"{int(v)}") for k in ("tp", "pp", "dp", "ep", "etp", "edp")},
    "micro_batches": ("mb", lambda v: f"{int(v)}"),
    "throughput_tokens_per_ms": ("throughput", lambda v: f"{si(v * 1e3)} tok/s"),
    "throughput_tokens_per_ms_per_gpu": ("per GPU", lambda v: f"{si(v * 1e3)} tok/s"),
    "ttft_s": ("TTFT", duration),
    "tpot_ms": ("TPOT", lambda v: duration(v / 1e3)),
    "tpot_bound_ms": ("TPOT bound", lambda v: duration(v / 1e3)),
    "tokens_per_s_per_user": ("per user", lambda v: f"{v:.3g} tok/s"),
    "max_memory_gb": ("memory", lambda v: f"{v:.3g} GB"),
    "load_imbalance": ("imbalance", lambda v: f"{v:.3f}"),
    "communication_ms": ("comm./GPU", lambda v: duration(v / 1e3)),
    "meets_requirements": ("meets req.", _yes),
    "feasible": ("meets req.", _yes),
    "proven": ("proven", _yes),
}


def front_mark(row) -> str:
    """'yes' on the front; else why not: the requirements it misses, or dominated."""
    if bool(row["pareto"]):
        return "yes"
    misses = row.get("misses")
    if not bool(row["feasible"]):
        known = isinstance(misses, str) and misses not in ("", "none")
        return f"no: misses {misses}" if known else "no: misses a requirement"
    return "no: dominated"


def human_table(df, empty: str = "(no deployment fits)") -> str:
    """``df`` as aligned text in human units (``HUMAN_COLUMNS``; ``pareto`` becomes ``front``
    with the reason a row is off it; ``misses`` is folded into that; missing values '-')."""
    if not len(df):
        return empty + "\n"
    import pandas as pd
    out = {}
    for col in df.columns:
        if col == "misses":
            continue
        if col == "pareto":
            out["front"] = [front_mark(row) for _, row in df.iterrows()]
            continue
        header, cell = HUMAN_COLUMNS.get(col, (col, str))
        out[header] = ["-" if v is None or (isinstance(v, float) and v != v) else v if isinstance(v, str)
                       else cell(v) for v in df[col]]
    return pd.DataFrame(out).to_string(index=False) + "\n"


def top_lines(df, n: int) -> list[str]:
    """The ``n`` best rows on the front (meeting every requirement), by throughput per GPU
    (highest first), then TTFT (lowest first): one line each."""
    if n <= 0:
        return []
    front = df[df["pareto"].astype(bool)] if len(df) else df
    if not len(front):
        return ["Top: no deployment meets every requirement"]
    best = front.sort_values(["throughput_tokens_per_ms_per_gpu", "ttft_s"], ascending=[False, True],
                             kind="stable").head(n)
    lines = [f"Top {len(best)} by throughput per GPU (then TTFT), meeting every requirement"]
    for k, (_, r) in enumerate(best.iterrows(), 1):
        degrees = " ".join(f"{c.upper()} {int(r[c])}" for c in ("tp", "pp", "dp", "ep", "etp", "edp"))
        decode = ""
        if "tpot_ms" in r and r["tpot_ms"] == r["tpot_ms"]:
            decode = (f", TPOT {duration(r['tpot_ms'] / 1e3)} "
                      f"({r['tokens_per_s_per_user']:.3g} tok/s per user)")
        lines.append(f"  {k}. {int(r['num_gpus'])} GPUs, {degrees}, {int(r['micro_batches'])} micro-batch(es): "
                     f"{si(r['throughput_tokens_per_ms_per_gpu'] * 1e3)} tok/s per GPU "
                     f"({si(r['throughput_tokens_per_ms'] * 1e3)} in all), TTFT {duration(r['ttft_s'])}"
                     f"{decode}, {r['max_memory_gb']:.3g} GB per GPU")
    return lines
