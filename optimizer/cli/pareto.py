"""`moeopt pareto INSTANCE`: the Pareto set of deployments as a pandas table."""

from __future__ import annotations

import click

from optimizer.cli.common import VERBOSE, FiniteFloatRange, OutputPath, load_instance, progress_bar, run
from optimizer.errors import InputError
from optimizer.inputs.files import write_atomic

TABLE_FORMAT = click.option("--format", "format_", type=click.Choice(["table", "csv", "json"]),
                            default="table", show_default=True,
                            help="output format: table (human units, then the top rows), or csv / json "
                                 "(the raw columns)")
OBJECTIVE = click.option("--objective", type=click.Choice(["lost-time", "throughput", "goodput"]), default=None,
                         help="static batch: lost-time (the only one; the front itself does not depend "
                              "on it). Service: goodput (default; every point at its goodput rate) or "
                              "throughput (every point at its sustainable rate, latency aside)")
TOP = click.option("--top", type=click.IntRange(0, 1000), default=5, show_default=True,
                   help="after the table, the N best deployments meeting every requirement "
                        "(by throughput per GPU, then TTFT); 0: none")


def render(df, format_: str, empty: str = "(no deployment fits)") -> str:
    """The table as human text (``empty`` when it has no row), CSV or JSON records."""
    if format_ == "csv":
        return df.to_csv(index=False)
    if format_ == "json":
        return df.to_json(orient="records", indent=1) + "\n"
    from optimizer.output.text import human_table
    return human_table(df, empty)


def render_with_top(df, format_: str, top: int, empty: str = "(no deployment fits)") -> str:
    """``render``, and in table format the top-``top`` summary after it."""
    text = render(df, format_, empty)
    if format_ == "table" and top:
        from optimizer.output.text import top_lines
        text += "\n".join(top_lines(df, top)) + "\n"
    return text


def configurations_bar():
    """(callback for ``pareto_table``'s on_progress, closer): a bar over the candidate
    configurations, drawn on a terminal only."""
    state = {"bar": None, "shown": 0}

    def update(done: int, total: int) -> None:
        if state["bar"] is None:
            state["bar"] = progress_bar(total, "pareto: configurations", "cfg")
        state["bar"].update(done - state["shown"])
        state["shown"] = done

    def close() -> None:
        if state["bar"] is not None:
            state["bar"].close()
    return update, close


@click.command("pareto", help="Pareto set of deployments over throughput per GPU (max), TTFT (min), "
                              "load imbalance (min) and communication (min), among those meeting "
                              "every requirement; with a decoding workload also TPOT and tokens/s "
                              "per user. Rows equal in every objective are shown once; rows sorted by "
                              "num_gpus, ttft_s, load_imbalance, communication_ms, then the degrees. For a service: "
                              "output tokens/s per GPU (max) against tokens/s per user (max), "
                              "each deployment at its goodput rate (--objective goodput) or its "
                              "sustainable rate (--objective throughput).")
@click.argument("instance", type=click.Path(dir_okay=True))
@TABLE_FORMAT
@click.option("--output", type=OutputPath(), default="-", show_default=True, help="file to write ('-' = stdout)")
@click.option("--gpus", type=click.IntRange(1, 65536), default=None, help="override hardware.num_gpus")
@click.option("--all", "show_all", is_flag=True,
              help="also the computed rows off the front, each marked with why (a requirement it "
                   "misses, or dominated)")
@TOP
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="where to compute: here, or as a Ray task (the sweep's Ray backend)")
@click.option("--address", default=None, help="Ray cluster address (with --backend ray)")
@click.option("--time-limit", type=FiniteFloatRange(0.05, 86400), default=None,
              help="seconds for the whole command, start-up aside: every build and CP-SAT solve "
                   "shares it; configurations it leaves no time for are skipped, with a warning "
                   "(default: search.time_limit_s)")
@click.option("--workers", type=click.IntRange(1, 64), default=None)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None)
@OBJECTIVE
@click.option("--mode", type=click.Choice(["agg", "disagg", "auto"]), default="agg", show_default=True,
              help="services: agg = one pool (the front above); disagg = a prefill and a decode pool "
                   "on at most the GPUs, one point per TPOT level, each the most output tokens/s per "
                   "GPU within it (epsilon-constraint); auto = both fronts in one table, pareto "
                   "marking the combined front. --time-limit bounds the agg front's search and the "
                   "disagg CP-SAT solves; the disagg pool candidates are computed in full")
@click.option("--tpot-levels", type=click.IntRange(1, 64), default=None,
              help="with --mode disagg|auto: how many TPOT bounds (default 8), evenly spaced in "
                   "tokens/s per user from the SLO's TPOT to the tightest one some deployment meets")
@VERBOSE
def command(instance, format_, output, gpus, show_all, top, backend, address, time_limit, workers,
            seed, objective, mode, tpot_levels, verbose):
    def body():
        from optimizer import api
        if backend != "ray" and address:
            raise InputError(f"--address={address}: only with --backend ray")
        inst = load_instance(instance)
        if tpot_levels is not None and mode == "agg":
            raise InputError(f"--tpot-levels={tpot_levels}: only with --mode disagg or auto")
        if inst.workload.kind == "service" and mode != "agg":
            from optimizer.cli.pareto_modes import service_modes
            table, footer = service_modes(inst, instance, mode, gpus, service_objective(objective), time_limit,
                                          workers, seed, backend, tpot_levels)
            text = render(table, format_, "(no disaggregated deployment meets every requirement)")
            return _emit(text + (footer if format_ == "table" else ""), output)
        if inst.workload.kind == "service":  # the throughput-interactivity front of a service
            return _service(inst, instance, gpus, format_, output, service_objective(objective), time_limit)
        if mode != "agg":
            raise InputError(f"--mode={mode}: workload.kind='batch': disaggregated serving plans services "
                             "(workload.kind 'service'); a static batch's front is computed with --mode agg")
        batch_objective(objective)
        update, close = configurations_bar()
        try:
            df = api.pareto(inst, gpus=gpus, time_limit_s=time_limit, workers=workers, seed=seed,
                            backend=backend, address=address, on_progress=update)
        finally:
            close()
        if df.attrs.get("unsolved"):
            limit = time_limit or inst.search.time_limit_s
            click.echo(f"moeopt: warning: the time limit of {limit:g} s left "
                       f"{df.attrs['unsolved']} configuration(s) unsolved; the front may miss points", err=True)
        empty = "(no deployment fits)"
        if not show_all:
            if len(df):
                empty = "(no deployment meets every requirement; --all shows those computed)"
            df = df[df["pareto"].astype(bool)].reset_index(drop=True)
        text = render_with_top(df, format_, top, empty)
        if output == "-":
            click.echo(text, nl=False)
        else:
            write_atomic(output, text)
            click.echo(f"{len(df)} deployments written to {output}")
    run(verbose, body)


def service_objective(objective: str | None) -> str:
    """The objective of a service (goodput by default); lost-time is the static batch's."""
    if objective == "lost-time":
        raise InputError("--objective=lost-time: a service is planned for goodput or throughput "
                         "(lost-time is the static batch's)")
    return objective or "goodput"


def batch_objective(objective: str | None) -> str:
    """The objective of a static batch: lost-time, the only one."""
    if objective not in (None, "lost-time"):
        raise InputError(f"--objective={objective}: a static batch is planned for lost-time "
                         f"(then its makespan); {objective} applies to services")
    return "lost-time"


def _service(inst, instance_path, gpus, format_, output, objective, time_limit):
    from optimizer.cli.service import trace_of
    from optimizer.search.service_pareto import service_pareto_table
    from optimizer.search.sweep import with_gpus
    if gpus is not None:
        if gpus > inst.hardware.num_gpus:
            raise InputError(f"--gpus={gpus}: exceeds hardware.num_gpus={inst.hardware.num_gpus}")
        inst = with_gpus(inst, gpus)
    table = service_pareto_table(inst, trace_of(inst, instance_path), objective, time_limit)
    if table.attrs.get("unsolved"):
        limit = time_limit or inst.search.time_limit_s
        click.echo(f"moeopt: warning: the time limit of {limit:g} s left {table.attrs['unsolved']} knob "
                   "group(s) unevaluated; the front may miss points", err=True)
    _emit(render(table, format_), output)


def _emit(text: str, output: str) -> None:
    """The front's text on stdout, or written to ``output`` with one line saying so."""
    if output == "-":
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)
        click.echo(f"front written to {output}")
