"""The moeopt command line (click). Commands are thin: parse, call the library, print.

Exit codes: 0 success; 1 internal error; 2 bad usage or input; 3 proven infeasible or a
checked plan violates a constraint; 4 time limit with no plan.

Definitions printed by --help: TTFT of a static batch = the prefill makespan of the whole
batch through the pipeline; throughput = prompt tokens of the batch / that makespan, for
the deployment (per GPU = divided by the GPUs used).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path

import click

from optimizer.errors import InfeasibleError, InputError, MoeoptError, NoSolutionError
from optimizer.fileio import load_model, write_atomic
from optimizer.schema import Instance

FORMAT = click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table",
                      show_default=True, help="stdout format")
VERBOSE = click.option("-v", "--verbose", count=True, help="logs to stderr; -vv shows tracebacks")

DEFINITIONS = ("TTFT = prefill makespan of the static batch; throughput = prompt tokens / makespan "
               "(deployment; per GPU = / GPUs used).")


def load_instance(path: str) -> Instance:
    return load_model(path, Instance, "instance")


def _dump(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def _run(verbose: int, fn) -> None:
    """Run a command body; expected failures print one line and exit with their code."""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr)
    try:
        fn()
    except MoeoptError as exc:
        click.echo(f"moeopt: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("moeopt: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so, keep the traceback for -vv
        if verbose >= 2:
            traceback.print_exc()
        click.echo(f"moeopt: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)


@click.group(help=f"moeopt: deploy a Mixture-of-Experts model on a GPU cluster. {DEFINITIONS}")
@click.version_option(package_name="moeopt")
def main() -> None:
    pass


@main.command(help=f"Best deployment for INSTANCE; writes results/<name>/plan.json. {DEFINITIONS}")
@click.argument("instance", type=click.Path(dir_okay=True))
@FORMAT
@click.option("--output", default=None, help="plan JSON path ('-' = stdout); default results/<name>/plan.json")
@click.option("--gpus", type=click.IntRange(1, 65536), default=None, help="override hardware.num_gpus")
@click.option("--time-limit", type=click.FloatRange(0.05, 86400), default=None, help="seconds")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="CP-SAT workers")
@click.option("--seed", type=click.IntRange(0, 2**31), default=None, help="CP-SAT random seed")
@VERBOSE
def solve(instance, format_, output, gpus, time_limit, workers, seed, verbose):
    def body():
        from optimizer.plan import plan_to_json
        from optimizer.report import plan_text
        from optimizer.solve import solve as run_solve

        inst = load_instance(instance)
        if gpus is not None and gpus > inst.hardware.num_gpus:
            raise InputError(f"--gpus={gpus}: exceeds hardware.num_gpus={inst.hardware.num_gpus}")
        try:
            result = run_solve(inst, gpus, time_limit, workers, seed)
        except (InfeasibleError, NoSolutionError) as exc:
            if format_ == "json":
                payload = {"schema_version": 1, "instance": inst.name, **exc.payload}
                payload.setdefault("explanation", str(exc))
                click.echo(_dump(payload), nl=False)
            raise
        solver = solver_dict(result)
        doc = plan_to_json(result.plan, result.evaluation, result.status, solver)
        target = output or str(Path("results") / inst.name / "plan.json")
        if target != "-":
            write_atomic(target, _dump(doc))
        if format_ == "json" or target == "-":
            click.echo(_dump(doc), nl=False)
        else:
            click.echo(plan_text(inst, result.plan, result.evaluation, result.status, solver), nl=False)
            click.echo(f"plan written to {target}")
    _run(verbose, body)


def solver_dict(result) -> dict:
    """The solver block of a plan: primary objective in ms, then the makespan phase."""
    first, second = result.primary, result.secondary
    out = {"status": result.status, "objective": first.objective / 1e6, "bound": first.bound / 1e6,
           "gap": first.gap, "wall_s": round(result.wall_s, 3), "objective_unit": "ms",
           "objective_name": "time lost per GPU to communication and expert imbalance",
           "cp_sat_status": first.status, "configurations": result.num_configurations}
    if second is not None and second.objective is not None:
        out.update({"makespan_status": second.status, "makespan_ms": second.objective / 1e6,
                    "makespan_bound_ms": second.bound / 1e6})
    return out


@main.command(help="Re-evaluate PLAN against INSTANCE from the plan alone; exit 3 if a constraint fails.")
@click.argument("instance", type=click.Path(dir_okay=True))
@click.argument("plan", type=click.Path(dir_okay=True))
@FORMAT
@VERBOSE
def check(instance, plan, format_, verbose):
    def body():
        from optimizer.checking import check_plan_file
        inst = load_instance(instance)
        doc, text, ok = check_plan_file(inst, plan)
        click.echo(_dump(doc) if format_ == "json" else text, nl=False)
        if not ok:
            sys.exit(3)
    _run(verbose, body)


@main.command(help="Print the JSON Schema of an instance file or a plan file.")
@click.argument("what", type=click.Choice(["instance", "plan"]), default="instance")
def schema(what):
    from optimizer.plan import PlanFile
    cls = Instance if what == "instance" else PlanFile
    click.echo(_dump(cls.model_json_schema()), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
