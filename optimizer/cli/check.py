"""``moeopt check INSTANCE PLAN``: every constraint and metric recomputed from the plan alone."""

from __future__ import annotations

import sys

import click

from optimizer.cli.common import FORMAT, VERBOSE, dump, load_instance, run
from optimizer.inputs.schema import Instance


@click.command(name="check", help="Re-evaluate PLAN against INSTANCE from the plan alone; exit 3 if a constraint fails.")
@click.argument("instance", type=click.Path(dir_okay=True))
@click.argument("plan", type=click.Path(dir_okay=True))
@FORMAT
@VERBOSE
def check(instance, plan, format_, verbose):
    def body():
        from optimizer.plan.check import check_plan_file
        inst = load_instance(instance)
        if inst.workload.kind == "service":  # services: optimizer/cli/service.py
            from optimizer.cli.service import check_service_command
            doc, text, ok = check_service_command(inst, instance, plan)
        else:
            doc, text, ok = check_plan_file(inst, plan, _smallest_gpu_count)
        click.echo(dump(doc) if format_ == "json" else text, nl=False)
        if not ok:
            sys.exit(3)
    run(verbose, body)


def _smallest_gpu_count(inst: Instance) -> int | None:
    from optimizer.cpsat.solve import smallest_gpu_count
    return smallest_gpu_count(inst)


command = check
