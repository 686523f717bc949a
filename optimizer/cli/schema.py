"""``moeopt schema [instance|plan]``: the JSON Schema of an input or plan file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from optimizer.cli.common import DEFINITIONS, FORMAT, VERBOSE, FiniteFloatRange, dump, load_instance, run
from optimizer.errors import InfeasibleError, InputError, NoSolutionError
from optimizer.inputs.files import write_atomic
from optimizer.inputs.schema import Instance


@click.command(name="schema", help="Print the JSON Schema of an instance file or a plan file.")
@click.argument("what", type=click.Choice(["instance", "plan"]), default="instance")
def schema(what):
    from optimizer.plan.files import PlanFile
    cls = Instance if what == "instance" else PlanFile
    click.echo(dump(cls.model_json_schema()), nl=False)


command = schema
