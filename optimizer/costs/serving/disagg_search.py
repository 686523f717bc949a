"""Every pool candidate of a disaggregated service within a GPU budget (plain Python).

Replica sizes g divide the GPUs per node or are multiples of it (docs/plan-file.md); a pool's
replica leaves room for at least one replica of the other pool. Per size, every configuration
of ``replica.service_degrees`` with the placement ``ranks_by_ep`` (least hot load per layer),
Megatron's layout and even stages; the decode configurations' sizes and bounds first (the
sizes fix the prefill pool's transfer classes), then prefill candidates, then decode candidates, pruned by a bound
when the goodput comes first. Dominated candidates (same GPUs and transfer class, no better
goodput, capacity and fewest replicas at the rate) are dropped before the model.
"""

from __future__ import annotations

import math
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
    decode_queue,
    evaluate_decode,
    evaluate_prefill,
    kv_transfer_bytes,
    prefill_knobs,
    prefill_load,
    prompt_kv_load,
    transfer_seconds,
    undominated,
)
from optimizer.costs.serving.disagg_decode import decode_rate_bound
from optimizer.costs.serving.metrics import Replica, ServiceLoad, Slo, sustainable_rps
from optimizer.costs.serving.replica import even_stages, replica, replica_memory, service_degrees
from optimizer.costs.tables import LinkFacts
from optimizer.costs.timing import hot_load
from optimizer.inputs.schema import Instance

_CAPACITY_MARGIN = 1e-6  # above the capacity bisection's relative tolerance (1e-7)


@dataclass
class PoolSearch:
    """The candidates of both pools and what the enumeration saw."""

    prefill: list[PrefillCandidate] = field(default_factory=list)
    decode: list[DecodeCandidate] = field(default_factory=list)
    configurations: int = 0  # (size, degrees) tuples enumerated
    evaluated: int = 0  # candidates evaluated, before dominance
    pruned: int = 0  # decode configurations a bound ruled out before evaluation
    prefill_skipped: int = 0  # prefill (configuration, knobs, class) whose capacity is below a goodput found
    kv_transfer_bytes: float = 0.0
    wall_s: dict[str, float] = field(default_factory=dict)


def replica_sizes(gpus_per_node: int, budget: int, max_replica_gpus: int | None = None) -> list[int]:
    """GPU counts of one replica that divide the GPUs per node or are multiples of it, below
    ``budget`` (the other pool needs at least one GPU) and at most ``max_replica_gpus``."""
    top = budget - 1 if max_replica_gpus is None else min(budget - 1, max_replica_gpus)
    small = [g for g in range(1, gpus_per_node + 1) if gpus_per_node % g == 0]
    large = list(range(2 * gpus_per_node, top + 1, gpus_per_node))
    return [g for g in small + large if g <= top]


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


def pair_goodput_score(p: PrefillCandidate, d: DecodeCandidate, budget: int, gpus_per_node: int) -> int:
    """The best deployment goodput score of one (prefill, decode) pair within ``budget``, with
    the pair's rules (transfer class, replicas at the instance's rate); -1 when none fits."""
    if min(p.gpus, d.gpus) != p.transfer.links or p.min_replicas is None or d.min_replicas is None:
        return -1
    best = -1
    for xp in range(max(1, p.min_replicas), budget // p.gpus + 1):
        room = (budget - xp * p.gpus) // d.gpus
        for xd in range(max(1, d.min_replicas), room + 1):
            if (p.transfer.link == INTRA_NODE) != (xp * p.gpus + xd * d.gpus <= gpus_per_node):
                continue
            best = max(best, min(xp * p.goodput_score, xd * d.goodput_score))
    return best


def pair_fewest_gpus(p: PrefillCandidate, d: DecodeCandidate, target_score: int, allowed: set[int],
                     gpus_per_node: int) -> int | None:
    """The fewest GPUs (an allowed count) of one pair whose deployment goodput score reaches
    ``target_score``, with the pair's transfer rules; None when none does."""
    if min(p.gpus, d.gpus) != p.transfer.links or p.goodput_score <= 0 or d.goodput_score <= 0:
        return None
    top = max(allowed)
    best = None
    for xp in range(-(-target_score // p.goodput_score), top // p.gpus + 1):
        for xd in range(-(-target_score // d.goodput_score), (top - xp * p.gpus) // d.gpus + 1):
            total = xp * p.gpus + xd * d.gpus
            if best is not None and total >= best:
                break
            if total in allowed and (p.transfer.link == INTRA_NODE) == (total <= gpus_per_node):
                best = total
                break
    return best


def _size_useless(bound_rps: float, g: int, targets: list[int], prefill_least: dict[int, float],
                  incumbents: dict[int, float]) -> bool:
    """True when a decode configuration of ``g`` GPUs per replica and goodput bound
    ``bound_rps`` needs more GPUs, with the fewest prefill GPUs, than a deployment already
    found, for every target score."""
    for t in targets:
        if bound_rps <= 0:
            continue
        least = g * math.ceil(t / (bound_rps * 1e6) * (1 - 1e-12)) + prefill_least[t]
        if least <= incumbents[t]:
            return False
    return True


def _undominated_decode(cands: list[DecodeCandidate]) -> list[DecodeCandidate]:
    return undominated(cands, lambda c: (c.gpus, (c.goodput_rps, c.capacity_rps,
                                                  -(c.min_replicas if c.min_replicas is not None else 1 << 30))))


def _undominated_prefill(cands: list[PrefillCandidate]) -> list[PrefillCandidate]:
    return undominated(cands, lambda c: ((c.gpus, c.transfer), (c.goodput_rps, c.capacity_rps,
                                                                -(c.min_replicas if c.min_replicas is not None
                                                                  else 1 << 30))))


def _prefill_candidates(inst: Instance, configs: list[tuple[int, Degrees]], decode_sizes: set[int], budget: int,
                        load: ServiceLoad, slo: Slo, rate_rps: float | None, loads, ranks_by_ep,
                        out: PoolSearch) -> list[PrefillCandidate]:
    """Every prefill candidate that may survive dominance (``searched_skipping_dominated``),
    in enumeration order: configurations, then knob tuples, then transfer classes."""
    max_mb = inst.search.max_micro_batches
    pl = prefill_load(load)
    entries = []  # PrefillEntry per (configuration, knob tuple), enumeration order
    for g, deg in configs:
        classes = transfer_classes(inst, g, decode_sizes, budget, out.kv_transfer_bytes)
        if not classes:
            continue
        mem = replica_memory(inst, deg, even_stages(inst.model.num_layers, deg.pp), prompt_kv_load(load))
        knobs = prefill_knobs(mem, deg.pp, load.prompt_tokens, max_mb)
        if knobs:
            rep, _ = _replica(inst, deg, pl, loads, ranks_by_ep)
            for k in knobs:
                entries.append(PrefillEntry(sustainable_rps(rep, k, pl), g, classes, (deg, k, rep)))

    def evaluate(entry: PrefillEntry, live: dict[TransferClass, float]) -> list[PrefillCandidate]:
        deg, k, rep = entry.of
        return evaluate_prefill(deg, k, rep, load, slo, rate_rps, live, entry.capacity_rps)
    found, skipped = searched_skipping_dominated(entries, evaluate)
    out.prefill_skipped += skipped
    return found


@dataclass(frozen=True)
class PrefillEntry:
    """One (configuration, knob tuple) before its goodput searches."""

    capacity_rps: float  # sustainable rate of one replica on the prefill load
    gpus: int
    classes: dict[TransferClass, float]  # transfer class -> seconds
    of: object  # what ``evaluate`` needs (degrees, knobs, replica)


def searched_skipping_dominated(entries: list[PrefillEntry], evaluate) -> tuple[list[PrefillCandidate], int]:
    """(the candidates of ``evaluate(entry, classes)`` over the entries in their order, the
    (entry, class) pairs skipped). The goodput searches (the costly part) run in decreasing
    order of capacity; an entry's transfer class is skipped when its capacity is below the
    goodput of a candidate already found with the same GPUs and class: that one beats it in
    goodput (goodput <= capacity), in capacity and in the fewest replicas at a rate (every
    per-replica rate this one serves, at most its capacity, the other serves too), so
    ``_undominated_prefill`` would drop it. ``_CAPACITY_MARGIN`` covers the capacity
    bisection's tolerance. The result is ordered so that ``_undominated_prefill`` gives the
    same list as without skipping (ties among equal candidates fall alike): by the first
    entry holding the candidate's (GPUs, class) group (``evaluate`` lists an entry's
    candidates in sorted class order), then by entry."""
    best: dict[tuple[int, TransferClass], float] = {}  # (GPUs, class) -> best goodput found
    found = []  # (entry index, candidate)
    skipped = 0
    for index in sorted(range(len(entries)), key=lambda i: (-entries[i].capacity_rps, i)):
        entry = entries[index]
        live = {c: s for c, s in entry.classes.items()
                if entry.capacity_rps * (1.0 + _CAPACITY_MARGIN) >= best.get((entry.gpus, c), 0.0)}
        skipped += len(entry.classes) - len(live)
        for cand in evaluate(entry, live):
            key = (cand.gpus, cand.transfer)
            best[key] = max(best.get(key, 0.0), cand.goodput_rps)
            found.append((index, cand))
    first: dict[tuple[int, TransferClass], tuple[int, int]] = {}  # group -> (entry, rank of its class)
    for index, entry in enumerate(entries):
        for rank, cls in enumerate(sorted(entry.classes)):
            first.setdefault((entry.gpus, cls), (index, rank))
    found.sort(key=lambda f: (first[(f[1].gpus, f[1].transfer)], f[0]))
    return [cand for _, cand in found], skipped


def pool_candidates(inst: Instance, budget: int, load: ServiceLoad, slo: Slo, rate_rps: float | None,
                    loads, ranks_by_ep: dict[int, list],
                    degrees_of: Callable[[int], list[Degrees]] | None = None,
                    max_replica_gpus: int | None = None, goodput_first: bool = False,
                    min_goodput_score: int | None = None, size_targets: list[int] | None = None,
                    allowed_gpus: list[int] | None = None) -> PoolSearch:
    """Undominated prefill and decode candidates on at most ``budget`` GPUs in all, replicas
    of at most ``max_replica_gpus`` GPUs. ``degrees_of(g)`` lists the configurations of g
    GPUs (default ``service_degrees``).

    With ``goodput_first`` (the solve maximizes goodput first) a decode configuration is not
    evaluated when even ``decode_rate_bound`` x its most replicas is below the goodput of a
    feasible pair already found (``pair_goodput_score``, at least ``min_goodput_score``):
    it cannot be part of an optimal deployment. Decode configurations are visited in
    decreasing order of that bound, so a strong pair is found early. With ``size_targets``
    (goodput scores, for ``moeopt size``) a decode configuration is not evaluated when, for
    every target, its replicas at that bound plus the fewest prefill GPUs reaching the target
    exceed the GPUs of a deployment already found (``pair_fewest_gpus`` on ``allowed_gpus``)."""
    degrees_of = degrees_of or (lambda g: service_degrees(inst, g))
    out = PoolSearch(kv_transfer_bytes=kv_transfer_bytes(inst, load.prompt_tokens))
    gpn, max_mb = inst.hardware.gpus_per_node, inst.search.max_micro_batches
    sizes = replica_sizes(gpn, budget, max_replica_gpus)
    configs = [(g, deg) for g in sizes for deg in degrees_of(g)]
    out.configurations = len(configs)
    start = time.perf_counter()
    decode_configs = []  # (bound on one replica's goodput, deg, knobs, replica)
    for _, deg in configs:
        knobs = decode_knobs(replica_memory(inst, deg, even_stages(inst.model.num_layers, deg.pp), load),
                             deg.pp, max_mb)
        if knobs:
            rep, _ = _replica(inst, deg, load, loads, ranks_by_ep)
            for k in knobs:
                dq = decode_queue(rep, k, load)
                bound = decode_rate_bound(dq.step_ns, dq.queues, dq.output_tokens, dq.cap, slo.max_tpot_ms)
                decode_configs.append((bound, deg, k, rep))
    out.wall_s["decode_bounds"] = time.perf_counter() - start
    start = time.perf_counter()
    decode_sizes = {deg.num_gpus for _, deg, _, _ in decode_configs}
    prefill = _prefill_candidates(inst, configs, decode_sizes, budget, load, slo, rate_rps, loads, ranks_by_ep,
                                  out)
    out.evaluated += len(prefill)
    out.prefill = _undominated_prefill(prefill)
    out.wall_s["prefill"] = time.perf_counter() - start
    start = time.perf_counter()
    min_prefill = min((c.gpus for c in out.prefill), default=budget)

    def most_score(bound: float, g: int) -> float:
        return bound * 1e6 * max(0, (budget - min_prefill) // g)
    decode_configs.sort(key=lambda t: -most_score(t[0], t[1].num_gpus))
    incumbent = -1 if min_goodput_score is None else min_goodput_score - 1
    targets = size_targets or []
    allowed = set(allowed_gpus or range(1, budget + 1))
    prefill_least = {t: min((c.gpus * -(-t // c.goodput_score) for c in out.prefill if c.goodput_score > 0),
                            default=math.inf) for t in targets}
    fewest = {t: math.inf for t in targets}
    if targets:
        decode_configs.sort(key=lambda t: -t[0] / t[1].num_gpus)
    decode = []
    for bound, deg, k, rep in decode_configs:
        if goodput_first and most_score(bound, deg.num_gpus) * (1 + 1e-9) < incumbent:
            out.pruned += 1
            continue
        if targets and _size_useless(bound, deg.num_gpus, targets, prefill_least, fewest):
            out.pruned += 1
            continue
        cand = evaluate_decode(deg, k, rep, load, slo, rate_rps)
        decode.append(cand)
        for t in targets:
            for p in out.prefill:
                n = pair_fewest_gpus(p, cand, t, allowed, gpn)
                if n is not None:
                    fewest[t] = min(fewest[t], n)
        if goodput_first:
            for p in out.prefill:
                score = pair_goodput_score(p, cand, budget, gpn)
                if min_goodput_score is None or score >= min_goodput_score:
                    incumbent = max(incumbent, score)
    out.evaluated += len(decode)
    out.decode = _undominated_decode(decode)
    out.wall_s["decode"] = time.perf_counter() - start
    return out
