"""``moeopt place``: expert-to-GPU placement for measured or synthetic expert loads."""

from __future__ import annotations

import logging

import click

from optimizer.cli.common import FORMAT, VERBOSE, FiniteFloatRange, dump, load_instance, run
from optimizer.errors import InputError

log = logging.getLogger(__name__)

HELP = """Expert placement for measured or synthetic loads: which experts (and replicas of hot
experts) each EP rank holds, per MoE layer, minimizing the hottest rank's load.

A rank's load counts each expert's tokens divided by its number of replicas (the runtimes
split a replicated expert's tokens evenly); balancedness = mean rank load / max rank load.
Each layer is reported with its proven lower bound; status "optimal" only when every layer
is proven optimal, otherwise "feasible" with each layer's gap.

LOADS: SGLang's {"logical_count": [layers][experts] or [steps][layers][experts]} JSON,
a CSV of layer,expert,tokens (header optional), or a .npy integer array of the same shapes.
All-zero layers (dense layers in SGLang files) are skipped. Without --loads, INSTANCE's
expert_load in routed token copies of its batch (batch x prompt tokens x top_k per layer).

With INSTANCE, --ep defaults to the largest divisor of experts + redundant that fits
hardware.num_gpus, and --nodes to ep / gpus_per_node when that divides evenly.

With --nodes K > 1 a second objective minimizes tokens that cross nodes, assuming tokens
of an expert originate evenly on all nodes and stay on a node holding one of its replicas:
cross = sum_e tokens_e * (1 - nodes holding e / K)."""


def _loads(instance, loads_path):
    """Layer ids, [layers][experts] int64 counts and the instance (or None)."""
    import numpy as np

    from optimizer.inputs.load_files import moe_layers, read_loads

    inst = load_instance(instance) if instance else None
    if loads_path:
        layer_ids, counts = read_loads(loads_path)
        if inst is not None and counts.shape[1] != inst.model.num_experts:
            raise InputError(f"loads {loads_path}: {counts.shape[1]} experts per layer, but instance "
                             f"{inst.name} has model.num_experts={inst.model.num_experts}")
    elif inst is not None:
        counts = np.array(synthetic_counts(inst), dtype=np.int64)
        layer_ids = list(range(counts.shape[0]))
    else:
        raise InputError("--loads: required without INSTANCE (a .json, .csv or .npy load file)")
    layer_ids, counts = moe_layers(layer_ids, counts)
    return layer_ids, counts, inst


def synthetic_counts(inst) -> list[list[int]]:
    """[layers][experts] routed token copies of the instance's batch under its expert_load
    (measured counts as given; otherwise the weights of ``optimizer.costs.expert_loads`` scaled to
    batch_sequences x prompt_tokens x top_k per layer, largest-remainder rounded)."""
    from optimizer.costs.expert_loads import largest_remainder, layer_weights
    from optimizer.inputs.load_files import MAX_COUNT
    from optimizer.inputs.schema import CountsLoad

    if isinstance(inst.expert_load, CountsLoad):
        return [list(row) for row in inst.expert_load.counts]
    tokens = inst.workload.batch_sequences * inst.workload.prompt_tokens * inst.model.top_k
    if tokens > MAX_COUNT:
        raise InputError(f"workload: batch_sequences x prompt_tokens x top_k = {tokens} routed token "
                         f"copies per layer; at most {MAX_COUNT} for moeopt place")
    return [largest_remainder(w, tokens) for w in layer_weights(inst)]


def _defaults(inst, num_experts: int, ep, redundant: int, nodes):
    if ep is None:
        if inst is None:
            raise InputError("--ep: required without INSTANCE (number of EP ranks)")
        slots = num_experts + redundant
        ep = max(d for d in range(1, min(slots, inst.hardware.num_gpus) + 1) if slots % d == 0)
    if nodes is None:
        nodes = 1
        if inst is not None:
            per = inst.hardware.gpus_per_node
            if ep > per and ep % per == 0:
                nodes = ep // per
    return ep, nodes


def table(doc: dict) -> str:
    """The readable form of the placement document."""
    lines = [f"placement: {len(doc['layers'])} MoE layers, {doc['num_experts']} experts + "
             f"{doc['redundant']} redundant slots on {doc['num_ranks']} ranks "
             f"({doc['num_nodes']} node{'s' if doc['num_nodes'] > 1 else ''}, "
             f"{doc['slots_per_rank']} slots per rank)",
             "loads in routed token copies; a replicated expert's tokens split evenly over its replicas",
             f"{'layer':>5}  {'max_load':>14}  {'mean_load':>14}  {'lower_bound':>14}  "
             f"{'balancedness':>12}  {'gap':>8}  status"]
    for lay in doc["layers"]:
        lines.append(f"{lay['layer']:>5}  {lay['max_load']:>14.1f}  {lay['mean_load']:>14.1f}  "
                     f"{lay['lower_bound']:>14.1f}  {lay['balancedness']:>12.5f}  "
                     f"{100 * lay['gap']:>7.3f}%  {lay['status']}")
    lines.append(f"balancedness mean {doc['balancedness_mean']:.5f}, min {doc['balancedness_min']:.5f}; "
                 f"worst gap {100 * doc['worst_gap']:.3f}%; status {doc['status']}; {doc['wall_s']:.2f} s")
    if "cross_node_tokens" in doc:
        lines.append(f"tokens crossing nodes (uniform sources, node-local dispatch): "
                     f"{doc['cross_node_tokens']:.0f}")
    return "\n".join(lines) + "\n"


@click.argument("instance", required=False, type=click.Path(dir_okay=True))
@click.option("--loads", "loads_path", type=click.Path(dir_okay=True), default=None,
              help="load file: .json (SGLang logical_count), .csv (layer,expert,tokens) or .npy")
@click.option("--ep", type=click.IntRange(1, 65536), default=None, help="EP ranks (GPUs holding experts)")
@click.option("--redundant", type=click.IntRange(0, 1_000_000), default=0, show_default=True,
              help="extra expert slots in all; experts + redundant must divide by --ep")
@click.option("--nodes", type=click.IntRange(1, 65536), default=None,
              help="nodes; ranks form equal contiguous blocks (default 1, or from INSTANCE)")
@click.option("--spread-replicas", is_flag=True, help="replicas of one expert on different nodes")
@FORMAT
@click.option("--output", default=None, help="also write the JSON document to PATH ('-' = stdout)")
@click.option("--time-limit", type=FiniteFloatRange(0.0, 86400), default=None,
              help="bound in seconds on the whole search, all layers together (start-up and "
                   "reading the loads aside): every search stops then and the best plan so far is "
                   "reported, marked time_limit_reached when not proven (default: INSTANCE's "
                   "search.time_limit_s, else 30)")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="CPU workers; layers are solved in that many processes (default: INSTANCE's, else 1)")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None, help="random seed")
@VERBOSE
def place_cmd(instance, loads_path, ep, redundant, nodes, spread_replicas, format_, output,
              time_limit, workers, seed, verbose):
    def body():
        from optimizer.inputs.files import write_atomic
        from optimizer.place import PlaceSpec, Settings, place

        layer_ids, counts, inst = _loads(instance, loads_path)
        num_experts = int(counts.shape[1])
        ep_, nodes_ = _defaults(inst, num_experts, ep, redundant, nodes)
        spec = PlaceSpec(ep_, redundant, nodes_, spread_replicas)
        spec.check(num_experts, len(layer_ids))
        search = inst.search if inst is not None else None
        settings = Settings(
            time_limit_s=time_limit if time_limit is not None else (search.time_limit_s if search else 30.0),
            workers=workers if workers is not None else (search.workers if search else 1),
            seed=seed if seed is not None else (search.seed if search else 0))
        log.info("place: %d layers x %d experts, ep=%d redundant=%d nodes=%d, %.1f s, %d workers",
                 len(layer_ids), num_experts, ep_, redundant, nodes_, settings.time_limit_s, settings.workers)
        result = place(counts, layer_ids, spec, settings)
        for lp in result.layers:
            log.info("layer %d: %s, greedy max %.1f -> %.1f, bound %.1f, %.2f s", lp.layer, lp.method,
                     lp.greedy_max_load, lp.max_load, lp.lower_bound, lp.wall_s)
        doc = result.to_json()
        if output and output != "-":
            write_atomic(output, dump(doc))
        if format_ == "json" or output == "-":
            click.echo(dump(doc), nl=False)
        else:
            click.echo(table(doc), nl=False)
            if output:
                click.echo(f"placement written to {output}")
    run(verbose, body)


command = click.command("place", help=HELP)(place_cmd)
