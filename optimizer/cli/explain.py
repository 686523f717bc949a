"""``moeopt explain INSTANCE PLAN``: per-operator breakdown of prefill and decode time and
per-GPU memory, with each operator's achieved fraction of speed of light and its source."""

from __future__ import annotations

import click

from optimizer.cli.common import FORMAT, VERBOSE, dump, load_instance, run


@click.command("explain", help=(
    "Per-operator breakdown of PLAN on INSTANCE: prefill and decode-step time by operator "
    "(linear GEMMs, attention core, TP all-reduce, routed experts, MoE communication, "
    "embedding, LM head, pipeline sends) with share, achieved fraction of speed of light and "
    "the efficiency's source (hardware profile table or flat), and memory per GPU by part."))
@click.argument("instance", type=click.Path(dir_okay=True))
@click.argument("plan", type=click.Path(dir_okay=True))
@FORMAT
@VERBOSE
def command(instance, plan, format_, verbose):
    def body():
        from optimizer.errors import InputError
        from optimizer.inputs.files import load_model
        from optimizer.plan.explain import explain, render
        from optimizer.plan.files import PlanFile, plan_from_file
        inst = load_instance(instance)
        built, checks = plan_from_file(inst, load_model(plan, PlanFile, "plan"))
        if built is None:
            bad = next((c.name for c in checks if not c.ok), "structure")
            raise InputError(f"plan {plan}: not a valid plan for this instance (check {bad} fails; "
                             "moeopt check says more)")
        doc = explain(inst, built)
        click.echo(dump(doc) if format_ == "json" else render(doc), nl=False)
    run(verbose, body)
