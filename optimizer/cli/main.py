"""The moeopt command line (click). Commands are thin: parse, call the library, print.

Exit codes: 0 success; 1 internal error; 2 bad usage or input; 3 proven infeasible or a
checked plan violates a constraint; 4 time limit with no plan.

The definitions that --help prints (TTFT, TPOT, throughput) are ``common.DEFINITIONS``.
"""

from __future__ import annotations

import sys

import click

from optimizer.cli.common import DEFINITIONS


class OneLineGroup(click.Group):
    """A click group whose usage errors are one line on stderr with exit code 2."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            message = " ".join(exc.format_message().split())
            click.echo(f"moeopt: {message}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("moeopt: aborted", err=True)
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=OneLineGroup,
             help=f"moeopt: deploy a Mixture-of-Experts model on a GPU cluster. {DEFINITIONS}")
@click.version_option(package_name="moeopt")
def main() -> None:
    pass


from optimizer.cli import (  # noqa: E402
    calibrate,
    check,
    explain,
    export,
    import_hf,
    init_instance,
    inspect_model,
    pareto,
    place,
    report,
    schema,
    simulate,
    size,
    solve,
    sweep,
)

# Every command, registered statically: one module per command, each defining ``command``.
for _command in (solve.command, check.command, schema.command, pareto.command, sweep.command,
                 export.command, report.command, import_hf.command, inspect_model.command,
                 init_instance.command, place.command, simulate.command, calibrate.command,
                 explain.command, size.command):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
