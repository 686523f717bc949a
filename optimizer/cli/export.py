"""``moeopt export PLAN --to FORMAT``: the files a runtime consumes (library: optimizer.output.export)."""

from __future__ import annotations

from pathlib import Path

import click

from optimizer.cli.common import FORMAT, VERBOSE, OutputPath, dump, load_instance, run
from optimizer.errors import InputError

FORMATS = ("sglang", "vllm", "trtllm", "megatron", "csv")


@click.command("export", help=(
    "Write the files a runtime consumes for PLAN: sglang (launch args + expert-location JSON), "
    "vllm (serve args + what vLLM cannot take), trtllm (LLM API YAML with the expert load "
    "balancer), megatron (parallelism args), csv (one row per GPU). PLAN may also be a "
    "`moeopt place` result (with --instance): exported as TP1 x DP=EP on its EP ranks, replicas "
    "included. A disaggregated plan (prefill and decode pools) gets one launch per pool replica "
    "with the runtime's prefill/decode flags, plus the router (sglang, vllm, trtllm; csv per "
    "pool; megatron refuses it). Exit 2 when the runtime cannot express the plan."))
@click.argument("plan", type=click.Path(dir_okay=True))  # a plan, or a `moeopt place` result
@click.option("--to", "to", type=click.Choice(FORMATS), required=True, help="target format")
@click.option("--output", type=OutputPath(), default=None,
              help="output directory; default results/<instance>/export-<format>/")
@click.option("--instance", "instance_path", default=None, type=click.Path(dir_okay=True),
              help="instance JSON: checks the plan against the model, gives expert loads "
                   "(vLLM: plan vs linear hot-rank load) and, for sglang/vllm/trtllm, the "
                   "settings the plan's figures assume (KV dtype, running-request cap, "
                   "chunked-prefill size, context length, memory fraction)")
@FORMAT
@VERBOSE
def command(plan, to, output, instance_path, format_, verbose):
    def body():
        from optimizer.inputs.files import read_json
        from optimizer.output.export import export, write_export
        from optimizer.output.export.placement_input import is_placement, plan_doc_from_placement
        from optimizer.plan.files import plan_from_doc
        from optimizer.plan.pools import is_disagg

        inst = load_instance(instance_path) if instance_path else None
        doc = read_json(plan, "plan")
        if is_disagg(doc):
            return _disagg(doc, plan, to, output, inst, format_)
        if is_placement(doc):   # a moeopt place result: the model comes from --instance
            if inst is None:
                raise InputError(f"--instance: required to export the placement {plan} "
                                 "(a moeopt place result names no model)")
            doc = plan_doc_from_placement(doc, inst, inst.name)
        p = plan_from_doc(doc, inst, str(plan))
        out_dir, root = _out_dirs(output, p.name, to)
        loads = None
        if inst is not None and to == "vllm":
            from optimizer.costs.expert_loads import expert_loads
            # expert_loads has one row per MoE layer in order: key them by layer index
            loads = dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))
        ex = export(p, to, out_dir, loads, inst)
        written = write_export(ex, out_dir, root)
        if format_ == "json":
            doc = {"plan": p.source, "instance": p.name, **ex.summary(out_dir, written)}
            click.echo(dump(doc), nl=False)
            return
        click.echo(_text(p, ex, out_dir, written), nl=False)
    run(verbose, body)


def _out_dirs(output, name: str, to: str) -> tuple[Path, Path]:
    """(the export folder, the folder every written path must stay inside)."""
    if output == "-":
        raise InputError("--output=-: export writes several files; give a directory")
    if output:  # the folder the user named: written inside it
        return Path(output), Path(output)
    # below ./results/, name is a ResultName (no separator, never '..')
    return Path("results") / name / f"export-{to}", Path("results")


def _disagg(doc, plan, to, output, inst, format_) -> None:
    """A disaggregated plan: one launch per pool replica plus the router (export.disagg)."""
    from optimizer.output.export import write_export
    from optimizer.output.export.disagg import export_disagg, export_pools
    from optimizer.plan.files import printable
    from optimizer.plan.pools import read_pools
    if to == "megatron":   # refused before the pools are read: one line, exit 2
        export_disagg(doc, to, Path("."), inst, str(plan))
    pools = read_pools(doc, inst, str(plan))
    name = pools[0].plan.name
    out_dir, root = _out_dirs(output, name, to)
    ex = export_pools(pools, doc, to, out_dir, inst, str(plan))
    written = write_export(ex, out_dir, root)
    if format_ == "json":
        click.echo(dump({"plan": str(plan), "instance": name, **ex.summary(out_dir, written)}),
                   nl=False)
        return
    here = str(out_dir.resolve())
    lines = [f"moeopt export --to {ex.fmt}: {printable(str(plan))} ({name}: disaggregated, "
             f"{sum(p.num_gpus for p in pools)} GPUs)"]
    for p in pools:
        d = p.plan.deg
        lines.append(f"  {p.role}: {p.replicas} replica(s) of {p.gpus_per_replica} GPUs, TP{d.tp} "
                     f"PP{d.pp} DP{d.dp}, EP{d.ep} ETP{d.etp}")
    lines += [f"wrote {w}" for w in written]
    for lc in ex.launches:
        lines.append(f"  # {lc.label}" + (f" when {lc.when}" if lc.when else ""))
        lines.append("  " + lc.command.replace("$HERE", here).replace("\n", "\n  "))
    lines += [f"warning: {w}" for w in ex.warnings]
    lines += [f"note: {n}" for n in ex.notes]
    click.echo("\n".join(lines) + "\n", nl=False)


def _text(p, ex, out_dir: Path, written: list[Path]) -> str:
    from optimizer.plan.files import printable
    d = p.deg
    here = str(out_dir.resolve())
    lines = [f"moeopt export --to {ex.fmt}: {printable(p.source)} ({p.name}: {d.num_gpus} GPUs, TP{d.tp} "
             f"PP{d.pp} DP{d.dp}, EP{d.ep} ETP{d.etp} EDP{d.edp})"]
    lines += [f"wrote {w}" for w in written]
    if ex.launches:
        lines.append(f"launch: {ex.instances} instance(s) of {ex.gpus_per_instance} GPUs; "
                     f"set {', '.join(ex.variables)}")
        for key, value in ex.env.items():
            lines.append(f"  export {key}={value}")
        for lc in ex.launches:
            if lc.label or lc.when:
                lines.append(f"  # {lc.label or lc.when}")
            lines.append("  " + lc.command.replace("$HERE", here).replace("\n", "\n  "))
    lines += [f"warning: {w}" for w in ex.warnings]
    lines += [f"note: {n}" for n in ex.notes]
    return "\n".join(lines) + "\n"
