"""`moeopt sweep INSTANCE --gpus 8,16,32`: solve and Pareto over GPU counts."""

from __future__ import annotations

from pathlib import Path

import click

from optimizer.cli.common import VERBOSE, FiniteFloatRange, OutputPath, batch_only, load_instance, progress_bar, run
from optimizer.cli.pareto import OBJECTIVE, TABLE_FORMAT, TOP, batch_objective, render, render_with_top, service_objective
from optimizer.errors import InputError


@click.command("sweep", help="Solve and Pareto over GPU counts: which counts meet every requirement, "
                             "the smallest that does, and the front across counts (fewer GPUs "
                             "is one more objective). Writes results/<name>/sweep.csv, "
                             "sweep.parquet, sweep-summary.csv and pareto.png. For a service: one "
                             "service solve per count (--objective goodput or throughput), one row per "
                             "count with goodput and throughput per GPU and TTFT/TPOT at the SLO "
                             "percentile, written to results/<name>/sweep-summary.csv.")
@click.argument("instance", type=click.Path(dir_okay=True))
@click.option("--gpus", "gpus_text", required=True, help="comma-separated GPU counts, e.g. 8,16,32,64")
@TABLE_FORMAT
@click.option("--output", type=OutputPath(), default=None, help="results folder (default results/<name>)")
@click.option("--jobs", type=click.IntRange(1, 256), default=1, show_default=True, help="parallel processes")
@click.option("--resume", is_flag=True, help="skip counts whose point is already written")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", default=None, help="Ray cluster address (with --backend ray)")
@click.option("--time-limit", type=FiniteFloatRange(0.05, 86400), default=None,
              help="seconds for the whole sweep, start-up aside: shared among the GPU counts to "
                   "compute (as many at a time as --jobs runs); per count, half for the solve and "
                   "the rest for its Pareto rows (default: search.time_limit_s)")
@click.option("--workers", type=click.IntRange(1, 64), default=None)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None)
@TOP
@OBJECTIVE
@click.option("--mode", type=click.Choice(["agg", "disagg", "auto"]), default="agg", show_default=True,
              help="services: agg = one pool; disagg = a prefill and a decode pool on at most each "
                   "count's GPUs; auto = both rows per count, the higher goodput per GPU marked chosen "
                   "(as solve --mode)")
@VERBOSE
def command(instance, gpus_text, format_, output, jobs, resume, backend, address, time_limit,
            workers, seed, top, objective, mode, verbose):
    def body():
        from optimizer.cpsat.search import SolverSettings
        from optimizer.search.sweep import (
            parse_counts,
            run_points,
            smallest_feasible,
            summary,
            sweep_table,
            write_outputs,
        )
        inst = load_instance(instance)
        counts = parse_counts(gpus_text)
        if backend != "ray" and address:
            raise InputError(f"--address={address}: only with --backend ray")
        if inst.workload.kind == "service":
            return _service(inst, instance, counts, format_, output, jobs, resume, backend, time_limit,
                            service_objective(objective), mode)
        if mode != "agg":
            raise InputError(f"--mode={mode}: workload.kind='batch': disaggregated serving plans services "
                             "(workload.kind 'service'); a static batch is swept with --mode agg")
        batch_only(inst, "sweep")
        batch_objective(objective)
        out_dir = Path(output) if output else Path("results") / inst.name
        settings = SolverSettings.of(inst, time_limit, workers, seed)
        bar = progress_bar(len(counts), "sweep: GPU counts", "count")
        try:
            points = run_points(inst, counts, out_dir, settings, jobs, resume, backend, address,
                                on_point=lambda done, total, gpus: points_done(bar, done, gpus))
        finally:
            bar.close()
        table, summ = sweep_table(points), summary(points)
        short = sorted(g for g, point in points.items() if point.get("unsolved"))
        if short:
            click.echo(f"moeopt: warning: the time limit left configurations unsolved for "
                       f"{', '.join(map(str, short))} GPUs; the front may miss points", err=True)
        files = write_outputs(table, summ, out_dir)
        smallest = smallest_feasible(points)
        if format_ == "table":
            cols = ["num_gpus", "meets_requirements", "status", "degrees", "ttft_s", "tpot_ms",
                    "tokens_per_s_per_user", "throughput_tokens_per_ms", "throughput_tokens_per_ms_per_gpu",
                    "max_memory_gb"]
            click.echo("Best plan per GPU count")
            click.echo(render(summ[[c for c in cols if c in summ]], "table"), nl=False)
            click.echo(f"smallest GPU count meeting every requirement: {smallest or 'none of these'}")
            click.echo("Pareto front across counts (meeting every requirement)")
            front = table[table["pareto"].astype(bool)].reset_index(drop=True)
            click.echo(render_with_top(front, "table", top, "(no deployment meets every requirement)"),
                       nl=False)
            click.echo("written: " + ", ".join(str(f) for f in files))
        else:
            click.echo(render(table, format_), nl=False)
    run(verbose, body)


def points_done(bar, done: int, gpus: int) -> None:
    """Advance the sweep's bar to ``done`` points, naming the count just finished."""
    bar.set_postfix_str(f"last: {gpus} GPUs", refresh=False)
    bar.update(done - bar.n)


def _service(inst, instance_path, counts, format_, output, jobs, resume, backend, time_limit, objective,
             mode="agg"):
    """The service sweep: one service solve per count and mode, one row each."""
    from optimizer.cli.service import trace_of
    from optimizer.inputs.files import write_atomic
    from optimizer.search.service_sweep import service_sweep, smallest_meeting
    if resume:
        raise InputError("--resume: a service sweep is computed afresh (it keeps no points)")
    if backend == "ray":
        raise InputError("--backend=ray: a service sweep runs locally (--jobs for processes)")
    if mode != "agg":
        from optimizer.cpsat.disagg_solve import check_disagg_instance
        check_disagg_instance(inst)
    limit = time_limit if time_limit is not None else inst.search.time_limit_s
    table = service_sweep(inst, counts, objective, limit, jobs, trace_of(inst, instance_path), mode)
    out_dir = Path(output) if output else Path("results") / inst.name
    path = out_dir / "sweep-summary.csv"
    write_atomic(path, table.to_csv(index=False))
    if format_ == "table":
        p = inst.requirements.percentile
        shown = table.drop(columns=["why_not"]).rename(columns={"ttft_s": f"ttft_p{p}_s", "tpot_ms": f"tpot_p{p}_ms"})
        shown = shown.apply(lambda col: col.map(lambda v: float(f"{v:.4g}") if isinstance(v, float) else v))
        click.echo(f"Best service plan per GPU count (objective {objective})"
                   + ("" if mode == "agg" else f", mode {mode} (chosen: the higher goodput per GPU)"))
        click.echo(render(shown, "table"), nl=False)
        for _, row in table[table["why_not"] != ""].iterrows():
            click.echo(f"  {row['num_gpus']} GPUs, {row['mode']}: {row['why_not']}")
        click.echo(f"smallest GPU count meeting every requirement: {smallest_meeting(table) or 'none of these'}")
        click.echo(f"written: {path}")
    else:
        click.echo(render(table, format_), nl=False)
