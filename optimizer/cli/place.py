"""``moeopt place``: expert-to-GPU placement for measured or synthetic expert loads."""

from __future__ import annotations

import logging

import click

from optimizer.cli.common import (
    FORMAT,
    VERBOSE,
    ElapsedBar,
    FiniteFloatRange,
    batch_only,
    dump,
    load_instance,
    progress_bar,
    run,
)
from optimizer.errors import InputError

log = logging.getLogger(__name__)

# On a terminal, a bar of MoE layers done (--current: of seconds used) appears once a run has
# taken this long (s); shorter runs and runs off a terminal draw nothing.
BAR_AFTER_S = 2.0

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
cross = sum_e tokens_e * (1 - nodes holding e / K).

With --current PLACEMENT (the placement in service: a moeopt placement JSON, a plan file's
expert_placement, or an SGLang/vLLM physical_to_logical_map JSON) the command rebalances:
it finds the best balance from scratch (40 % of the time limit), then per layer the plan with
the fewest expert moves (copies of an expert onto a rank that lacks it) whose hottest rank
is within --tolerance of that best, by CP-SAT. It reports the moves, the bytes per rank and
per link (intra/inter-node; with --expert-bytes or INSTANCE) and the balance given up."""


def _loads(instance, loads_path):
    """Layer ids, [layers][experts] int64 counts and the instance (or None)."""
    import numpy as np

    from optimizer.inputs.load_files import moe_layers, read_loads

    inst = load_instance(instance) if instance else None
    batch_only(inst, "place")
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
    if "migration" in doc:
        lines += _migration_lines(doc)
    if "cross_node_tokens" in doc:
        lines.append(f"tokens crossing nodes (uniform sources, node-local dispatch): "
                     f"{doc['cross_node_tokens']:.0f}")
    return "\n".join(lines) + "\n"


def _migration_lines(doc: dict) -> list[str]:
    """The rebalancing summary: moves, kept share, bytes per link and per rank, balance given up."""
    m = doc["migration"]
    slots = doc["slots_per_rank"] * doc["num_ranks"] * len(doc["layers"])
    out = [f"rebalancing (--current, minimize {m['objective']}, tolerance {100 * m['tolerance']:.3g}%): "
           f"{m['moves']} expert moves of {slots} slots ({100 * m['kept_fraction']:.2f}% kept in place), "
           f"{m['intra_node_moves']} intra-node, {m['inter_node_moves']} inter-node; "
           f"a from-scratch plan would move {m['scratch_moves']}",
           f"balance given up: {100 * m['balance_given_up']:.4f}% of the best max load (worst layer); "
           f"most moves into one rank {max(m['received_moves_per_rank'])}, out of one rank "
           f"{max(m['sent_moves_per_rank'])}"]
    if "moved_bytes" in m:
        gb = 1e9
        out.append(f"bytes: {m['moved_bytes'] / gb:.3f} GB moved ({m['intra_node_bytes'] / gb:.3f} intra-node, "
                   f"{m['inter_node_bytes'] / gb:.3f} inter-node); at most {m['max_received_bytes_per_rank'] / gb:.3f} "
                   f"GB into and {m['max_sent_bytes_per_rank'] / gb:.3f} GB out of one rank")
    return out


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
@click.option("--effort", type=FiniteFloatRange(0.001, 86400), default=None,
              help="deterministic budget per layer: CP-SAT deterministic seconds and 20 local-search "
                   "tries per unit; a fixed seed with one worker then repeats its plan, the time limit "
                   "being only a hard stop (default: the time limit alone)")
@click.option("--current", "current_path", type=click.Path(dir_okay=True), default=None,
              help="placement in service (moeopt placement JSON, plan file, or SGLang/vLLM "
                   "physical_to_logical_map JSON): rebalance with the fewest moves")
@click.option("--tolerance", type=FiniteFloatRange(0.0, 1.0), default=0.001, show_default=True,
              help="with --current: the hottest rank may exceed the best found by this fraction")
@click.option("--minimize", type=click.Choice(["moves", "inter-node"]), default="moves", show_default=True,
              help="with --current: expert copies (= bytes: routed experts share one size), or "
                   "copies crossing nodes first, then copies")
@click.option("--expert-bytes", type=FiniteFloatRange(0.0, 1e15), default=None,
              help="with --current: bytes of one routed expert (default: from INSTANCE's model)")
@VERBOSE
def place_cmd(instance, loads_path, ep, redundant, nodes, spread_replicas, format_, output,
              time_limit, workers, seed, effort, current_path, tolerance, minimize, expert_bytes,
              verbose):
    def body():
        from optimizer.inputs.files import write_atomic
        from optimizer.place import PlaceSpec, Settings, place
        from optimizer.place.current import read_current
        from optimizer.place.rebalance import rebalance

        layer_ids, counts, inst = _loads(instance, loads_path)
        num_experts = int(counts.shape[1])
        ep_, nodes_ = _defaults(inst, num_experts, ep, redundant, nodes)
        spec = PlaceSpec(ep_, redundant, nodes_, spread_replicas)
        spec.check(num_experts, len(layer_ids))
        search = inst.search if inst is not None else None
        settings = Settings(
            time_limit_s=time_limit if time_limit is not None else (search.time_limit_s if search else 30.0),
            workers=workers if workers is not None else (search.workers if search else 1),
            seed=seed if seed is not None else (search.seed if search else 0), effort=effort)
        log.info("place: %d layers x %d experts, ep=%d redundant=%d nodes=%d, %.1f s, %d workers",
                 len(layer_ids), num_experts, ep_, redundant, nodes_, settings.time_limit_s, settings.workers)
        if current_path:
            current = read_current(current_path, layer_ids, num_experts, ep_, spec.slots_per_rank(num_experts))
            size = expert_bytes
            if size is None and inst is not None:
                from optimizer.costs.formulas import expert_bytes as model_expert_bytes
                size = model_expert_bytes(inst.model)
            with ElapsedBar(settings.time_limit_s, "rebalancing: seconds used of the time limit", BAR_AFTER_S):
                result = rebalance(counts, layer_ids, current, spec, settings, tolerance, minimize, size)
        else:
            bar = progress_bar(len(layer_ids), "place: MoE layers", "layer", delay=BAR_AFTER_S)
            try:
                result = place(counts, layer_ids, spec, settings, progress=bar.update)
            finally:
                bar.close()
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
