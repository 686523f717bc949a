"""Every pool candidate of a disaggregated service within a GPU budget (plain Python).

Replica sizes g divide the GPUs per node or are multiples of it (docs/plan-file.md); a pool's
replica leaves room for at least one replica of the other pool. Per size, every configuration
of ``replica.service_degrees`` with the placement ``ranks_by_ep`` (least hot load per layer),
Megatron's layout and even stages; decode candidates first (their sizes fix the prefill
pool's transfer classes), then prefill candidates. Dominated candidates (same GPUs and
transfer class, no better goodput and capacity) are dropped before the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.serving.disagg import (
    INTER_NODE,
    INTRA_NODE,
    DecodeCandidate,
    PrefillCandidate,
    TransferClass,
    decode_knobs,
    evaluate_decode,
    evaluate_prefill,
    kv_transfer_bytes,
    prefill_knobs,
    prefill_load,
    prompt_kv_load,
    transfer_seconds,
    undominated,
)
from optimizer.costs.serving.metrics import Replica, ServiceLoad, Slo
from optimizer.costs.serving.replica import even_stages, replica, replica_memory, service_degrees
from optimizer.costs.tables import LinkFacts
from optimizer.costs.timing import hot_load
from optimizer.inputs.schema import Instance


@dataclass
class PoolSearch:
    """The candidates of both pools and what the enumeration saw."""

    prefill: list[PrefillCandidate] = field(default_factory=list)
    decode: list[DecodeCandidate] = field(default_factory=list)
    configurations: int = 0  # (size, degrees) tuples enumerated
    evaluated: int = 0  # candidates evaluated, before dominance
    kv_transfer_bytes: float = 0.0
    wall_s: dict[str, float] = field(default_factory=dict)


def replica_sizes(gpus_per_node: int, budget: int) -> list[int]:
    """GPU counts of one replica that divide the GPUs per node or are multiples of it, below
    ``budget`` (the other pool needs at least one GPU)."""
    small = [g for g in range(1, gpus_per_node + 1) if gpus_per_node % g == 0]
    large = list(range(2 * gpus_per_node, budget, gpus_per_node))
    return [g for g in small + large if g < budget]


def _replica(inst: Instance, deg: Degrees, load: ServiceLoad, loads, ranks_by_ep) -> tuple[Replica, tuple]:
    stages = even_stages(inst.model.num_layers, deg.pp)
    moe_ids = inst.model.moe_layer_ids
    hot = {l: hot_load(row, ranks_by_ep[deg.ep][i]) for i, (l, row) in enumerate(zip(moe_ids, loads))}
    facts = LinkFacts.of(megatron_layout(deg, inst.hardware.gpus_per_node))
    return replica(inst, deg, facts, stages, hot, load), stages


def transfer_classes(inst: Instance, g_prefill: int, decode_sizes: set[int], budget: int,
                     num_bytes: float) -> dict[TransferClass, float]:
    """Transfer class -> seconds for a prefill replica of ``g_prefill`` GPUs beside each
    decode size that fits the budget with it: intra-node when both fit one node."""
    gpn = inst.hardware.gpus_per_node
    out = {}
    for g_d in decode_sizes:
        if g_prefill + g_d > budget:
            continue
        links = min(g_prefill, g_d)
        if g_prefill + g_d <= gpn:
            out[TransferClass(INTRA_NODE, links)] = transfer_seconds(inst, num_bytes, links, INTRA_NODE)
        if budget > gpn:
            out[TransferClass(INTER_NODE, links)] = transfer_seconds(inst, num_bytes, links, INTER_NODE)
    return out


def pool_candidates(inst: Instance, budget: int, load: ServiceLoad, slo: Slo, rate_rps: float | None,
                    loads, ranks_by_ep: dict[int, list],
                    degrees_of: Callable[[int], list[Degrees]] | None = None) -> PoolSearch:
    """Undominated prefill and decode candidates on at most ``budget`` GPUs in all.
    ``degrees_of(g)`` lists the configurations of g GPUs (default ``service_degrees``)."""
    degrees_of = degrees_of or (lambda g: service_degrees(inst, g))
    out = PoolSearch(kv_transfer_bytes=kv_transfer_bytes(inst, load.prompt_tokens))
    max_mb = inst.search.max_micro_batches
    sizes = replica_sizes(inst.hardware.gpus_per_node, budget)
    configs = [(g, deg) for g in sizes for deg in degrees_of(g)]
    out.configurations = len(configs)
    start = time.perf_counter()
    decode = []
    for _, deg in configs:
        knobs = decode_knobs(replica_memory(inst, deg, even_stages(inst.model.num_layers, deg.pp), load),
                             deg.pp, max_mb)
        if knobs:
            rep, _ = _replica(inst, deg, load, loads, ranks_by_ep)
            decode += [evaluate_decode(deg, k, rep, load, slo, rate_rps) for k in knobs]
    out.evaluated += len(decode)
    out.decode = undominated(decode, lambda c: (c.gpus, (c.goodput_rps, c.capacity_rps)))
    out.wall_s["decode"] = time.perf_counter() - start
    start = time.perf_counter()
    decode_sizes = {c.gpus for c in out.decode}
    prefill = []
    for g, deg in configs:
        classes = transfer_classes(inst, g, decode_sizes, budget, out.kv_transfer_bytes)
        if not classes:
            continue
        mem = replica_memory(inst, deg, even_stages(inst.model.num_layers, deg.pp), prompt_kv_load(load))
        knobs = prefill_knobs(mem, deg.pp, load.prompt_tokens, max_mb)
        if knobs:
            rep, _ = _replica(inst, deg, prefill_load(load), loads, ranks_by_ep)
            for k in knobs:
                prefill += evaluate_prefill(deg, k, rep, load, slo, rate_rps, classes)
    out.evaluated += len(prefill)
    out.prefill = undominated(prefill, lambda c: ((c.gpus, c.transfer), (c.goodput_rps, c.capacity_rps)))
    out.wall_s["prefill"] = time.perf_counter() - start
    return out
