"""``moeopt report PLAN [--instance INSTANCE] [--output FILE]``: one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from optimizer.cli.common import VERBOSE, OutputPath, batch_only, load_instance, run
from optimizer.errors import InputError


@click.command(name="report", help=(
    "Write one self-contained HTML file with pictures of PLAN: cluster map, expert placement, "
    "memory per GPU, routed load per EP rank, requirements and the Pareto plot (from "
    "results/<instance>/sweep.csv or pareto.csv). Loads and requirements need --instance. "
    "A disaggregated plan shows both pools (a deployment map, then each pool's pictures) and "
    "the KV transfer. "
    "Default output: results/<instance>/report.html."))
@click.argument("plan", type=click.Path(dir_okay=True))
@click.option("--instance", "instance_path", default=None, type=click.Path(dir_okay=True),
              help="instance JSON: adds routed loads, requirements and recomputed metrics")
@click.option("--output", type=OutputPath(), default=None,
              help="HTML path ('-' = stdout); default results/<instance>/report.html")
@VERBOSE
def command(plan, instance_path, output, verbose):
    def body():
        from optimizer.inputs.files import read_json
        from optimizer.output.html import default_report_path, render_report, write_report

        doc = read_json(plan, "plan")
        if not isinstance(doc, dict):
            raise InputError(f"plan {plan}: expected a JSON object, got {type(doc).__name__}")
        from optimizer.plan.pools import is_disagg
        inst = load_instance(instance_path) if instance_path else None
        if not is_disagg(doc):  # a disaggregated plan is a service's
            batch_only(inst, "report")
        target = output or str(default_report_path(inst, doc))
        if target == "-":
            click.echo(render_report(inst, doc, source=str(Path(plan))), nl=False)
            return
        if Path(target).is_dir():
            raise InputError(f"--output={target!r}: is a directory, expected a file path")
        try:
            write_report(inst, doc, target, source=str(Path(plan)))
        except OSError as exc:
            raise InputError(f"--output={target!r}: cannot be written ({exc.strerror or exc})") from None
        click.echo(f"report written to {target}")
    run(verbose, body)
