"""Pieces every moeopt command shares: options, output, the error-to-exit-code wrapper."""

from __future__ import annotations

import json
import logging
import math
import sys
import traceback

import click

from optimizer.errors import MoeoptError
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance

FORMAT = click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table",
                      show_default=True, help="stdout format")
VERBOSE = click.option("-v", "--verbose", count=True, help="logs to stderr; -vv shows tracebacks")


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also rejects NaN (it compares false with both bounds, so
    FloatRange lets ``--time-limit nan`` through)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


class OutputPath(click.ParamType):
    """An output file or folder path: ``-`` (stdout, where the command allows it) or a path
    that ``check_output_path`` accepts (not empty, no control character, names short
    enough). An empty ``--output ""`` is an error, never the default path."""

    name = "path"

    def convert(self, value, param, ctx):
        from optimizer.inputs.files import output_path_problem
        problem = None if value == "-" else output_path_problem(value)
        if problem is not None:
            shown = repr(value) if len(value) <= 80 else repr(value[:77]) + "..."
            self.fail(f"{shown} {problem}", param, ctx)
        return value


def printable(text: str) -> str:
    """``text`` with every control character (and lone surrogate) written as an escape, so
    that a message quoting a hostile file cannot drive the terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


DEFINITIONS = ("TTFT = prefill makespan of the static batch (every request arrives at once); "
               "TPOT = one decode step; throughput = (prompt + generated tokens) / batch makespan, "
               "the makespan being TTFT + output tokens x TPOT (deployment; per GPU = / GPUs used).")


def load_instance(path: str) -> Instance:
    return load_model(path, Instance, "instance")


def dump(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def run(verbose: int, fn) -> None:
    """Run a command body; expected failures print one line and exit with their code."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr)
    try:
        fn()
    except MoeoptError as exc:
        click.echo(f"moeopt: {printable(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("moeopt: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so, keep the traceback for -vv
        if verbose >= 2:
            traceback.print_exc()
        click.echo(f"moeopt: internal error: {type(exc).__name__}: {printable(str(exc))}", err=True)
        sys.exit(1)


