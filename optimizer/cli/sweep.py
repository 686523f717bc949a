"""`moeopt sweep INSTANCE --gpus 8,16,32`: solve and Pareto over GPU counts."""

from __future__ import annotations

from pathlib import Path

import click

from optimizer.cli.common import VERBOSE, FiniteFloatRange, OutputPath, batch_only, load_instance, progress_bar, run
from optimizer.cli.pareto import TABLE_FORMAT, TOP, render, render_with_top
from optimizer.errors import InputError


@click.command("sweep", help="Solve and Pareto over GPU counts: which counts meet every requirement, "
                             "the smallest that does, and the front across counts (fewer GPUs "
                             "is one more objective). Writes results/<name>/sweep.csv, "
                             "sweep.parquet, sweep-summary.csv and pareto.png.")
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
@VERBOSE
def command(instance, gpus_text, format_, output, jobs, resume, backend, address, time_limit,
            workers, seed, top, verbose):
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
        batch_only(inst, "sweep")
        counts = parse_counts(gpus_text)
        if backend != "ray" and address:
            raise InputError(f"--address={address}: only with --backend ray")
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
