"""``moeopt schema [instance|plan]``: the JSON Schema of an input or plan file."""

from __future__ import annotations

import click

from optimizer.cli.common import dump
from optimizer.inputs.schema import Instance


@click.command(name="schema", help="Print the JSON Schema of an instance file or a plan file.")
@click.argument("what", type=click.Choice(["instance", "plan"]), default="instance")
def schema(what):
    from optimizer.plan.files import PlanFile
    cls = Instance if what == "instance" else PlanFile
    click.echo(dump(cls.model_json_schema()), nl=False)


command = schema
