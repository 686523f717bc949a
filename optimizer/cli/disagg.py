"""The disaggregated side of ``moeopt solve --mode disagg|auto`` (a service instance): the
plan of both pools, its text, and the auto mode's choice between agg and disagg."""

from __future__ import annotations

from pathlib import Path

import click

from optimizer.cli.common import dump
from optimizer.errors import InfeasibleError, InputError, NoSolutionError
from optimizer.inputs.files import write_atomic
from optimizer.inputs.schema import Instance

MODES = ("agg", "disagg", "auto")


def _degrees(d: dict) -> str:
    return f"tp {d['tp']} pp {d['pp']} dp {d['dp']} ep {d['ep']} etp {d['etp']}"


def disagg_text(inst: Instance, doc: dict) -> str:
    """The readable summary of a disaggregated plan."""
    m, t = doc["metrics"], doc["transfer"]
    p = inst.requirements.percentile
    solver = doc["solver"]
    gap = "" if doc["status"] == "optimal" else f", gap {solver['gap']:.2%}"
    lines = [f"{inst.name}: {doc['status']} disaggregated service plan ({solver['objective_name']}{gap})"]
    for pool in doc["pools"]:
        k, pm = pool["serving"], pool["metrics"]
        figure = (f"TTFT p{p} {pm[f'ttft_p{p}_s']:.3f} s" if pool["role"] == "prefill"
                  else f"TPOT p{p} {pm[f'tpot_p{p}_ms']:.2f} ms")
        lines.append(f"{pool['role']} pool: {pool['replicas']} x {pool['num_gpus']} GPUs | "
                     f"{_degrees(pool['degrees'])} | B {k['max_running_requests']} C {k['prefill_chunk_tokens']} "
                     f"m_p {k['prefill_micro_batches']} m_d {k['decode_micro_batches']} | per replica: goodput "
                     f"{pm['goodput_rps']:.4g} requests/s, {figure}, utilization {pm['utilization']:.0%}, "
                     f"memory {pm['max_memory_gb']:.2f} GB per GPU")
    lines.append(f"KV transfer: {t['link']} over {t['links']} links, {t['kv_bytes_per_request'] / 1e9:.4g} GB "
                 f"per request, {t['transfer_s'] * 1e3:.3g} ms")
    lines.append(f"at {m['rate_rps']:.4g} requests/s: TTFT p50 {m['ttft_p50_s']:.3f} s, p90 {m['ttft_p90_s']:.3f} s | "
                 f"TPOT {m['tpot_p90_ms']:.2f} ms ({m['tokens_per_s_per_user']:.1f} tokens/s per user) | "
                 f"utilization {m['utilization']:.0%}")
    lines.append(f"goodput {m['goodput_rps']:.4g} requests/s at p{p} on {doc['num_gpus']} GPUs "
                 f"({m['goodput_rps_per_gpu']:.4g} per GPU) | output {m['output_tokens_per_s_per_gpu']:.1f} "
                 f"tokens/s per GPU (capacity {m['max_output_tokens_per_s_per_gpu']:.1f})")
    return "\n".join(lines) + "\n"


def summary_line(mode: str, doc: dict | None, why_not: str | None = None) -> str:
    """One line per mode for ``--mode auto``."""
    if doc is None:
        return f"{mode:<6}: no plan: {why_not}"
    m = doc["metrics"]
    status = doc["status"] if doc["status"] == "optimal" else f"feasible, gap {doc['solver'].get('gap', 0.0):.2%}"
    if "pools" in doc:
        shape = " + ".join(f"{p['role']} {p['replicas']}x{p['num_gpus']} ({_degrees(p['degrees'])})"
                           for p in doc["pools"])
    else:
        shape = _degrees(doc["degrees"])
    return (f"{mode:<6}: {m['goodput_rps_per_gpu']:.4g} requests/s per GPU (goodput {m['goodput_rps']:.4g} on "
            f"{doc['num_gpus']} GPUs) | TTFT p90 {m['ttft_p90_s']:.3f} s | TPOT p90 {m['tpot_p90_ms']:.2f} ms | "
            f"{shape} | {status}")


def disagg_doc(inst: Instance, gpus, objective, time_limit, workers, seed, trace) -> dict:
    from optimizer.cpsat.disagg_solve import solve_disagg, solver_dict
    from optimizer.plan.pools import disagg_plan_to_json
    result = solve_disagg(inst, gpus, objective, time_limit, workers, seed, trace)
    return disagg_plan_to_json(inst.name, result.evaluation, result.status, solver_dict(result))


def agg_doc(inst: Instance, gpus, objective, time_limit, workers, seed, trace) -> tuple[dict, list[str]]:
    from optimizer.cli.service import solver_dict
    from optimizer.cpsat.disagg_auto import solve_agg_for_auto
    from optimizer.plan.service import peak_memory_bytes, service_plan_to_json
    result = solve_agg_for_auto(inst, gpus, objective, time_limit, workers, seed, trace)
    memory = peak_memory_bytes(inst, result.plan, result.chosen.knobs, result.load)
    doc = service_plan_to_json(result.plan, result.chosen, memory, result.status, solver_dict(result))
    doc["solver"]["gap"] = 0.0 if result.status == "optimal" else _agg_gap(doc["solver"])
    return doc, result.notes


def _agg_gap(solver: dict) -> float:
    value, bound = solver["objective"], solver["bound"]
    return abs(bound - value) / value if value else 0.0


def solve_mode_command(inst: Instance, instance_path: str, mode: str, gpus, objective, time_limit, workers,
                       seed, format_: str, output: str | None) -> None:
    """``moeopt solve --mode disagg|auto`` on a service instance."""
    import time

    from optimizer.cli.service import service_text, trace_of
    if objective == "lost-time":
        raise InputError("--objective=lost-time: a service is planned for goodput or throughput")
    trace = trace_of(inst, instance_path)
    limit = time_limit if time_limit is not None else inst.search.time_limit_s
    start = time.monotonic()
    docs: dict[str, dict | None] = {}
    why: dict[str, str] = {}
    notes: list[str] = []
    timed_out = False
    try:
        docs["disagg"] = disagg_doc(inst, gpus, objective, limit, workers, seed, trace)
    except (InfeasibleError, NoSolutionError) as exc:
        if mode == "disagg":
            _echo_infeasible(inst, exc, format_)
            raise
        docs["disagg"], why["disagg"], timed_out = None, str(exc), isinstance(exc, NoSolutionError)
    if mode == "auto":
        left = max(1.0, limit - (time.monotonic() - start))
        try:
            docs["agg"], notes = agg_doc(inst, gpus, objective, left, workers, seed, trace)
        except (InfeasibleError, NoSolutionError) as exc:
            docs["agg"], why["agg"] = None, str(exc)
            timed_out = timed_out or isinstance(exc, NoSolutionError)
        if docs["agg"] is None and docs["disagg"] is None:
            kind = NoSolutionError if timed_out else InfeasibleError
            exc = kind(f"no plan in either mode: agg: {why['agg']}; disagg: {why['disagg']}",
                       {"status": "unknown" if timed_out else "infeasible",
                        "explanation": f"agg: {why['agg']}; disagg: {why['disagg']}",
                        "conflicts": [] if timed_out else ["goodput"], "bounds": {}})
            _echo_infeasible(inst, exc, format_)
            raise exc
    chosen = _better(docs)
    doc = docs[chosen]
    doc.setdefault("mode", chosen)
    if mode == "auto":
        doc["solver"]["auto"] = {"chosen": chosen, **{name: _auto_summary(docs[name], why.get(name))
                                                      for name in ("agg", "disagg")}}
    from optimizer.plan.files import record_exchange
    record_exchange(doc, inst)
    target = output or str(Path("results") / inst.name / "plan.json")
    if target != "-":
        write_atomic(target, dump(doc), "--output" if output else "output")
    if format_ == "json" or target == "-":
        click.echo(dump(doc), nl=False)
        return
    text = disagg_text(inst, doc) if chosen == "disagg" else service_text(inst, doc, notes)
    click.echo(text, nl=False)
    if mode == "auto":
        for name in ("agg", "disagg"):
            click.echo(summary_line(name, docs[name], why.get(name)))
        click.echo(f"chosen: {chosen} (the higher goodput per GPU)")
    click.echo(f"plan written to {target}")


def _auto_summary(doc: dict | None, why_not: str | None) -> dict:
    """What ``--mode auto`` records of each mode in the written plan's solver block."""
    if doc is None:
        return {"status": "infeasible", "why_not": why_not}
    m, solver = doc["metrics"], doc["solver"]
    return {"status": doc["status"], "gap": solver.get("gap", 0.0), "num_gpus": doc["num_gpus"],
            "goodput_rps": m["goodput_rps"], "goodput_rps_per_gpu": m["goodput_rps_per_gpu"],
            "ttft_p90_s": m["ttft_p90_s"], "tpot_p90_ms": m["tpot_p90_ms"], "wall_s": solver["wall_s"],
            "shape": summary_line("", doc).split("|")[3].strip()}


def _better(docs: dict[str, dict | None]) -> str:
    """The mode of the higher goodput per GPU (agg on a tie: one pool is simpler to run)."""
    if docs.get("agg") is None:
        return "disagg"
    if docs.get("disagg") is None:
        return "agg"
    agg, dis = (docs[m]["metrics"]["goodput_rps_per_gpu"] for m in ("agg", "disagg"))
    return "disagg" if dis > agg else "agg"


def _echo_infeasible(inst: Instance, exc: InfeasibleError | NoSolutionError, format_: str) -> None:
    if format_ == "json":
        click.echo(dump({"schema_version": 1, "instance": inst.name, **exc.payload}), nl=False)
