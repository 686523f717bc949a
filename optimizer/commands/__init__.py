"""Commands beyond solve/check/schema, one module each; each module defines ``command``.

Add a module here and its name to ``MODULES``; ``register_commands`` attaches them to the
click group in ``optimizer/cli.py``.
"""

from __future__ import annotations

import importlib

import click

MODULES: list[str] = ["pareto", "sweep", "export", "report", "import_hf", "inspect_model", "init_instance", "place"]


def register_commands(group: click.Group) -> None:
    """Attach every listed command module's ``command`` to ``group``."""
    for name in MODULES:
        group.add_command(importlib.import_module(f"optimizer.commands.{name}").command)
