"""`moeopt pareto INSTANCE`: the Pareto set of deployments as a pandas table."""

from __future__ import annotations

import click

from optimizer.cli.common import VERBOSE, FiniteFloatRange, load_instance, OutputPath, run
from optimizer.errors import InputError
from optimizer.inputs.files import write_atomic

TABLE_FORMAT = click.option("--format", "format_", type=click.Choice(["table", "csv", "json"]),
                            default="table", show_default=True, help="output format")


def render(df, format_: str) -> str:
    """The table as text, CSV or JSON records."""
    if format_ == "csv":
        return df.to_csv(index=False)
    if format_ == "json":
        return df.to_json(orient="records", indent=1) + "\n"
    return (df.to_string(index=False, float_format=lambda v: f"{v:.4g}") if len(df) else "(no deployment fits)") + "\n"


@click.command("pareto", help="Pareto set of deployments over throughput per GPU (max), TTFT (min), "
                              "load imbalance (min) and communication (min); rows sorted by "
                              "num_gpus, ttft_s, load_imbalance, communication_ms.")
@click.argument("instance", type=click.Path(dir_okay=True))
@TABLE_FORMAT
@click.option("--output", type=OutputPath(), default="-", show_default=True, help="file to write ('-' = stdout)")
@click.option("--gpus", type=click.IntRange(1, 65536), default=None, help="override hardware.num_gpus")
@click.option("--all", "show_all", is_flag=True, help="also rows that are not on the front")
@click.option("--time-limit", type=FiniteFloatRange(0.05, 86400), default=None,
              help="seconds for the whole command, start-up aside: every build and CP-SAT solve "
                   "shares it; configurations it leaves no time for are skipped, with a warning "
                   "(default: search.time_limit_s)")
@click.option("--workers", type=click.IntRange(1, 64), default=None)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None)
@VERBOSE
def command(instance, format_, output, gpus, show_all, time_limit, workers, seed, verbose):
    def body():
        from optimizer.search.pareto import pareto_table
        from optimizer.cpsat.search import SolverSettings
        from optimizer.search.sweep import with_gpus
        inst = load_instance(instance)
        if gpus is not None:
            if gpus > inst.hardware.num_gpus:
                raise InputError(f"--gpus={gpus}: exceeds hardware.num_gpus={inst.hardware.num_gpus}")
            inst = with_gpus(inst, gpus)
        settings = SolverSettings.of(inst, time_limit, workers, seed)
        df = pareto_table(inst, None, settings)
        if df.attrs.get("unsolved"):
            click.echo(f"moeopt: warning: the time limit of {settings.time_limit_s:g} s left "
                       f"{df.attrs['unsolved']} configuration(s) unsolved; the front may miss points", err=True)
        if not show_all:
            df = df[df["pareto"]].reset_index(drop=True)
        text = render(df, format_)
        if output == "-":
            click.echo(text, nl=False)
        else:
            write_atomic(output, text)
            click.echo(f"{len(df)} deployments written to {output}")
    run(verbose, body)
