"""``moeopt solve INSTANCE``: the best deployment; prints it and writes the plan file."""

from __future__ import annotations

from pathlib import Path

import click

from optimizer.cli.common import DEFINITIONS, FORMAT, ElapsedBar, FiniteFloatRange, OutputPath, dump, load_instance, run
from optimizer.errors import InfeasibleError, InputError, NoSolutionError
from optimizer.inputs.files import write_atomic


@click.command(name="solve", help=f"Best deployment for INSTANCE; writes results/<name>/plan.json. {DEFINITIONS}")
@click.argument("instance", type=click.Path(dir_okay=True))
@FORMAT
@click.option("--output", type=OutputPath(), default=None, help="plan JSON path ('-' = stdout); default results/<name>/plan.json")
@click.option("--gpus", type=click.IntRange(1, 65536), default=None, help="override hardware.num_gpus")
@click.option("--time-limit", type=FiniteFloatRange(0.05, 86400), default=None,
              help="seconds for the whole command, start-up aside: model builds, both CP-SAT phases "
                   "and any infeasibility explanation share it (default: search.time_limit_s)")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="CP-SAT workers")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None, help="CP-SAT random seed")
@click.option("--report", is_flag=True, help="also write results/<name>/report.html")
@click.option("--log-solver", is_flag=True, help="CP-SAT's search log of every solve to stderr")
@click.option("--dump-model", "dump_model", default=None, metavar="FILE",
              help="write the phase-1 CP-SAT model (protobuf text format) to FILE once built, "
                   "before any search")
@click.option("--objective", type=click.Choice(["lost-time", "throughput", "goodput"]), default=None,
              help="what to optimize first (default: lost-time for a static batch, goodput for a service)")
@click.option("--redundant-experts", "redundant", type=click.IntRange(0, 4096), default=None,
              help="replicated expert slots per MoE layer, placed after the solve by the placement "
                   "engine on the chosen EP degree, the plan then re-evaluated (default: "
                   "search.redundant_experts, else none)")
@click.option("--mode", type=click.Choice(["agg", "disagg", "auto"]), default="agg", show_default=True,
              help="services: agg = one pool running prefill and decode; disagg = a prefill pool and a "
                   "decode pool with their own degrees and replica counts (docs/serving-model.md); auto = "
                   "both, the higher goodput per GPU written, one summary line each")
@click.option("--current", "current_path", type=click.Path(dir_okay=True), default=None,
              help="the placement in service (moeopt placement, plan file or SGLang/vLLM expert-location "
                   "JSON): when its EP ranks and slots match the plan's, the plan moves the fewest experts "
                   "from it, placed after the solve in max(1 s, 25 %) of the time limit (default: "
                   "search.current_placement)")
@click.option("--tolerance", type=FiniteFloatRange(0.0, 1.0), default=None,
              help="with a current placement: each layer's hottest EP rank may exceed the best balance "
                   "found from scratch by this fraction [default: 0.001]")
@click.option("--minimize", type=click.Choice(["moves", "bytes"]), default=None,
              help="with a current placement: expert moves, or moved bytes (the same plan: routed "
                   "experts share one size) [default: moves]")
@click.option("-v", "--verbose", count=True,
              help="logs to stderr and every expert id per EP rank in the printed plan; -vv shows tracebacks")
def solve(instance, format_, output, gpus, time_limit, workers, seed, report, log_solver, dump_model,
          objective, redundant, mode, current_path, tolerance, minimize, verbose):
    def body():
        from optimizer import api
        from optimizer.output.text import plan_text, status_note
        from optimizer.plan.files import plan_to_json, record_exchange

        inst = load_instance(instance)
        if gpus is not None and gpus > inst.hardware.num_gpus:
            raise InputError(f"--gpus={gpus}: exceeds hardware.num_gpus={inst.hardware.num_gpus}")
        from optimizer.cli.migration import check_options, open_current
        check_options(mode, current_path, tolerance, minimize, inst)
        current = open_current(inst, instance, current_path)  # checked before any search
        moving = (tolerance if tolerance is not None else 0.001, minimize or "moves")
        if mode != "agg":  # disaggregated or both: optimizer/cli/disagg.py
            if inst.workload.kind != "service":
                raise InputError(f"--mode={mode}: workload.kind='batch': disaggregated serving plans "
                                 "services (workload.kind 'service'); a static batch is solved with --mode agg")
            from optimizer.cli.disagg import solve_mode_command
            return solve_mode_command(inst, instance, mode, gpus, objective, time_limit, workers, seed,
                                      format_, output)
        if inst.workload.kind == "service":  # services: optimizer/cli/service.py
            from optimizer.cli.service import solve_service_command
            return solve_service_command(inst, instance, gpus, objective, time_limit, workers, seed, format_, output,
                                         current, *moving)
        if objective not in (None, "lost-time"):
            raise InputError(f"--objective={objective}: a static batch is planned for lost-time "
                             f"(then its makespan); {objective} applies to services")
        try:
            limit_s = time_limit or inst.search.time_limit_s
            with ElapsedBar(limit_s, "solving: seconds used of the time limit"):
                result = api.solve(inst, gpus=gpus, time_limit_s=time_limit, workers=workers, seed=seed,
                                   interruptible=True, log_search=log_solver,
                                   on_model=model_writer(dump_model))
        except (InfeasibleError, NoSolutionError) as exc:
            if format_ == "json":
                payload = {"schema_version": 1, "instance": inst.name, **exc.payload}
                payload.setdefault("explanation", str(exc))
                click.echo(dump(payload), nl=False)
            raise
        solver = solver_dict(result)
        if result.extra.get("interrupted"):
            click.echo("moeopt: interrupted: the plan below is the best found so far", err=True)
        plan, evaluation, status = result.plan, result.evaluation, result.status
        replicas = redundant if redundant is not None else inst.search.redundant_experts
        moved, placed = None, None
        if current is not None:  # the fewest moves from it (optimizer/cli/migration.py)
            from optimizer.cli.migration import batch_with_current
            plan, evaluation, status, solver, moved, placed = batch_with_current(
                inst, plan, evaluation, status, solver, current, replicas or 0, *moving,
                max(1.0, 0.25 * (time_limit or inst.search.time_limit_s)), max(1, workers or inst.search.workers),
                seed if seed is not None else inst.search.seed)
        if replicas and placed is not None:
            solver = dict(solver, replicas={"redundant_experts": replicas, "status": placed["status"],
                                            "balancedness_min": placed["balancedness_min"]})
        elif replicas:   # CP-SAT proved the plan without replicas, not this one: "feasible"
            from optimizer.cli.replicas import with_replicas
            plan, evaluation, placed = with_replicas(
                inst, plan, replicas, max(1.0, 0.25 * (time_limit or inst.search.time_limit_s)),
                workers or inst.search.workers, seed if seed is not None else inst.search.seed)
            status = "feasible"
            summary = placed.to_json()
            solver = dict(solver, replicas={"redundant_experts": replicas, "status": summary["status"],
                                            "balancedness_min": summary["balancedness_min"]})
        doc = plan_to_json(plan, evaluation, status, solver)
        if replicas:
            doc["redundant_experts"] = replicas
        if moved is not None:
            doc["migration"] = moved
            if not moved["reused"]:
                click.echo(f"moeopt: {moved['reason']}", err=True)
        record_exchange(doc, inst)
        target = output or str(Path("results") / inst.name / "plan.json")
        if target != "-":
            write_atomic(target, dump(doc), "--output" if output else "output")
        if report:
            from optimizer.output.html import write_report
            report_path = Path("results") / inst.name / "report.html"
            write_report(inst, doc, report_path)
            click.echo(f"report written to {report_path}", err=format_ == "json" or target == "-")
        if format_ == "json" or target == "-":
            click.echo(dump(doc), nl=False)
        else:
            note = status_note(solver, result.extra.get("unproven_placement_layers"))
            click.echo(plan_text(inst, plan, evaluation, status, solver,
                                 expert_ids=verbose >= 1, note=note), nl=False)
            if moved is not None and moved["reused"]:
                from optimizer.cli.migration import summary_line
                click.echo(summary_line(moved))
            click.echo(f"plan written to {target}")
    run(verbose, body)


def model_writer(path: str | None):
    """None, or a callback writing a CP-SAT model to ``path`` (protobuf text, atomically)."""
    if path is None:
        return None

    def write(model) -> None:
        write_atomic(path, str(model.proto), "--dump-model")
    return write


def solver_dict(result) -> dict:
    """The solver block of a plan: primary objective in ms, then the makespan phase."""
    first, second = result.primary, result.secondary
    out = {"status": result.status, "objective": first.objective / 1e6, "bound": first.bound / 1e6,
           "gap": first.gap, "wall_s": round(result.wall_s, 3), "objective_unit": "ms",
           "objective_name": "time lost per GPU to communication, expert imbalance and pipeline idling",
           "cp_sat_status": first.status, "configurations": result.num_configurations}
    # "interrupted": Ctrl-C stopped the search; "greedy": CP-SAT found nothing in time, the
    # plan is the greedy warm start (both come with status "feasible" and the gap)
    for key in ("interrupted", "greedy"):
        if result.extra.get(key):
            out[key] = True
    # MoE layers whose placement is not proven optimal (absent when every one is)
    if result.extra.get("unproven_placement_layers"):
        out["unproven_layers"] = list(result.extra["unproven_placement_layers"])
    if second is not None and second.objective is not None:
        out.update({"makespan_status": second.status, "makespan_ms": second.objective / 1e6,
                    "makespan_bound_ms": second.bound / 1e6})
    return out


command = solve
