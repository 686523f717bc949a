"""`moeopt sweep INSTANCE --gpus 8,16,32`: solve and Pareto over GPU counts."""

from __future__ import annotations

from pathlib import Path

import click

from optimizer.cli.common import VERBOSE, FiniteFloatRange, load_instance, OutputPath, run
from optimizer.cli.pareto import TABLE_FORMAT, render
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
@VERBOSE
def command(instance, gpus_text, format_, output, jobs, resume, backend, address, time_limit,
            workers, seed, verbose):
    def body():
        from optimizer.cpsat.search import SolverSettings
        from optimizer.search.sweep import (parse_counts, run_points, smallest_feasible, summary,
                                     sweep_table, write_outputs)
        inst = load_instance(instance)
        counts = parse_counts(gpus_text)
        if backend != "ray" and address:
            raise InputError(f"--address={address}: only with --backend ray")
        out_dir = Path(output) if output else Path("results") / inst.name
        settings = SolverSettings.of(inst, time_limit, workers, seed)
        points = run_points(inst, counts, out_dir, settings, jobs, resume, backend, address)
        table, summ = sweep_table(points), summary(points)
        short = sorted(g for g, point in points.items() if point.get("unsolved"))
        if short:
            click.echo(f"moeopt: warning: the time limit left configurations unsolved for "
                       f"{', '.join(map(str, short))} GPUs; the front may miss points", err=True)
        files = write_outputs(table, summ, out_dir)
        smallest = smallest_feasible(points)
        if format_ == "table":
            cols = ["num_gpus", "meets_requirements", "status", "degrees", "ttft_s",
                    "throughput_tokens_per_ms", "throughput_tokens_per_ms_per_gpu", "max_memory_gb"]
            click.echo("Best plan per GPU count")
            click.echo(render(summ[cols], "table"), nl=False)
            click.echo(f"smallest GPU count meeting every requirement: {smallest or 'none of these'}")
            click.echo("Pareto front across counts")
            click.echo(render(table[table["pareto"]].reset_index(drop=True), "table"), nl=False)
            click.echo("written: " + ", ".join(str(f) for f in files))
        else:
            click.echo(render(table, format_), nl=False)
    run(verbose, body)
