"""The service side of ``moeopt solve`` and ``moeopt check`` (an instance whose workload has
``kind: "service"``): the plan of a service, its text and its check."""

from __future__ import annotations

from pathlib import Path

import click

from optimizer.cli.common import dump
from optimizer.errors import InfeasibleError
from optimizer.inputs.files import write_atomic
from optimizer.inputs.schema import Instance


def trace_of(inst: Instance, instance_path: str):
    """The workload's trace (None without one), read relative to the instance file."""
    from optimizer.inputs.service import load_trace
    return load_trace(inst.workload, instance_path)


def solve_service_command(inst: Instance, instance_path: str, gpus, objective, time_limit, workers, seed,
                          format_: str, output: str | None, current=None, tolerance: float = 0.001,
                          minimize: str = "moves") -> None:
    from optimizer.cpsat.service_solve import solve_service
    from optimizer.plan.service import peak_memory_bytes, service_plan_to_json
    try:
        result = solve_service(inst, gpus, objective, time_limit, workers, seed, trace_of(inst, instance_path))
    except InfeasibleError as exc:
        if format_ == "json":
            click.echo(dump({"schema_version": 1, "instance": inst.name, **exc.payload}), nl=False)
        raise
    plan, chosen, status, moved = result.plan, result.chosen, result.status, None
    if current is not None:  # the fewest moves from the placement in service
        from optimizer.cli.migration import service_with_current
        plan, chosen, status, moved = service_with_current(
            inst, result, current, tolerance, minimize, max(1.0, 0.25 * (time_limit or inst.search.time_limit_s)),
            max(1, workers or inst.search.workers), seed if seed is not None else inst.search.seed)
    memory = peak_memory_bytes(inst, plan, chosen.knobs, result.load)
    doc = service_plan_to_json(plan, chosen, memory, status, solver_dict(result))
    if moved is not None:
        doc["migration"] = moved
        if not moved["reused"]:
            click.echo(f"moeopt: {moved['reason']}", err=True)
    from optimizer.plan.files import record_exchange
    record_exchange(doc, inst)
    target = output or str(Path("results") / inst.name / "plan.json")
    if target != "-":
        write_atomic(target, dump(doc), "--output" if output else "output")
    if format_ == "json" or target == "-":
        click.echo(dump(doc), nl=False)
    else:
        click.echo(service_text(inst, doc, result.notes), nl=False)
        if moved is not None and moved["reused"]:
            from optimizer.cli.migration import summary_line
            click.echo(summary_line(moved))
        click.echo(f"plan written to {target}")


def solver_dict(result) -> dict:
    """The solver block of a service plan: each lexicographic phase, the search's size."""
    names = {"goodput": "goodput (requests/s meeting every SLO at the percentile), then throughput",
             "throughput": "throughput (output tokens/s at the sustainable rate), then goodput"}
    first = result.choice.phases[0]
    scale, unit = (1e6, "requests/s") if first.name == "goodput" else (1e3, "output tokens/s")
    return {"status": result.status, "objective_name": result.objective,
            "objective_description": names[result.objective],
            "objective": first.value / scale, "bound": first.bound / scale, "objective_unit": unit,
            "phases": [{"name": p.name, "status": p.status, "score": p.value, "score_bound": p.bound}
                       for p in result.choice.phases],
            "wall_s": round(result.wall_s, 3), "candidates": len(result.searched.candidates),
            "configurations": result.searched.configurations,
            "groups_skipped_by_bounds": result.searched.pruned, "notes": result.notes}


def service_text(inst: Instance, doc: dict, notes: list[str]) -> str:
    d, k, m = doc["degrees"], doc["serving"], doc["metrics"]
    p = inst.requirements.percentile
    lines = [f"{inst.name}: {doc['status']} service plan ({doc['solver']['objective_name']})",
             f"GPUs {doc['num_gpus']} | attention TP {d['tp']} x DP {d['dp']} | MoE EP {d['ep']} x ETP "
             f"{d['etp']} x EDP {d['edp']} | PP {d['pp']}",
             f"per replica: max_running_requests {k['max_running_requests']}, prefill_chunk_tokens "
             f"{k['prefill_chunk_tokens']}, prefill_micro_batches {k['prefill_micro_batches']}, "
             f"decode_micro_batches {k['decode_micro_batches']}",
             f"at {m['rate_rps']:.4g} requests/s: TTFT p50 {m['ttft_p50_s']:.3f} s, p90 {m['ttft_p90_s']:.3f} s | "
             f"TPOT {m['tpot_p90_ms']:.2f} ms ({m['tokens_per_s_per_user']:.1f} tokens/s per user) | "
             f"utilization {m['utilization']:.0%}",
             f"goodput {m['goodput_rps']:.4g} requests/s at p{p} ({m['goodput_rps_per_gpu']:.4g} per GPU) | "
             f"output {m['output_tokens_per_s_per_gpu']:.1f} tokens/s per GPU (capacity "
             f"{m['max_output_tokens_per_s_per_gpu']:.1f}) | memory {m['max_memory_gb']:.2f} GB per GPU"]
    return "\n".join(lines + notes) + "\n"


def check_service_command(inst: Instance, instance_path: str, plan_path: str) -> tuple[dict, str, bool]:
    from optimizer.costs.serving.replica import service_load
    from optimizer.plan.check import check_service_plan_file
    return check_service_plan_file(inst, plan_path, service_load(inst.workload, trace_of(inst, instance_path)))
