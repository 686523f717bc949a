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




def batch_only(inst: Instance | None, command: str) -> None:
    """A one-line input error (exit 2) when a static-batch command gets a service."""
    from optimizer.errors import InputError
    if inst is not None and inst.workload.kind == "service":
        raise InputError(f"workload.kind='service': moeopt {command} takes static batches; plan a "
                         "service with moeopt solve or moeopt pareto, and run it with moeopt simulate")


def on_terminal() -> bool:
    """True when both stdout and stderr are terminals: progress bars are drawn only then,
    so pipes, files and tests see exactly the same output as before."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def progress_bar(total: int, desc: str, unit: str, **options):
    """A tqdm bar on stderr (disabled, drawing nothing, off a terminal); ``.update(n)``,
    ``.close()``; ``options`` go to tqdm."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not on_terminal(),
                leave=False, dynamic_ncols=True, **options)


class ElapsedBar:
    """A bar of seconds spent against a time limit, ticking in a background thread while a
    call runs that reports no progress of its own (a CP-SAT solve); context manager; draws
    nothing off a terminal (no thread either)."""

    def __init__(self, limit_s: float, desc: str, min_s: float = 2.0):
        self.limit_s, self.desc, self.min_s = limit_s, desc, min_s
        self._stop = None

    def __enter__(self):
        if not on_terminal():
            return self
        import threading
        import time
        self._stop = threading.Event()

        def tick() -> None:
            start = time.monotonic()
            if self._stop.wait(self.min_s):  # short runs draw no bar
                return
            shown = round(self.min_s)
            bar = progress_bar(max(1, round(self.limit_s)), self.desc, "s", initial=shown,
                               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} s")
            while not self._stop.wait(0.5):
                now = min(round(time.monotonic() - start), round(self.limit_s))
                bar.update(now - shown)
                shown = now
            bar.close()

        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
