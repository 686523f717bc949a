"""Every service candidate of an instance on some GPUs: configurations x admissible knob
tuples, evaluated in plain Python, skipping groups of tuples that cannot beat the best
feasible candidate found so far.

A group is the tuples of one configuration that differ only in B. Its widest tuple (largest
B) sustains the highest rate of the group (B only caps the running decodes), and goodput
<= sustainable rate, throughput = sustainable rate x output tokens; a group is skipped when
its widest tuple's sustainable rate is below the incumbent's figure. Groups are visited in
decreasing order of queues * C / (s step(C - 1, 1)), the prefill capacity with one decode (an
estimate that finds a strong incumbent early; it prunes nothing itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.serving.candidates import ServiceCandidate, evaluate_group
from optimizer.costs.serving.knobs import ServingKnobs, admissible_knobs
from optimizer.costs.serving.metrics import Replica, ServiceLoad, Slo, sustainable_rps
from optimizer.costs.serving.replica import even_stages, replica, replica_memory, service_degrees
from optimizer.costs.tables import LinkFacts
from optimizer.costs.timing import hot_load


@dataclass
class ServiceSearch:
    """Candidates of the configurations evaluated, and what was skipped."""

    candidates: list[ServiceCandidate] = field(default_factory=list)
    configurations: int = 0  # with at least one group evaluated
    pruned: int = 0  # groups skipped by the bound
    without_knobs: int = 0  # no knob tuple fits the memory
    unvisited: int = 0  # groups left when the time ran out (the search is then incomplete)
    # (degrees, widest knobs, replica) of the groups skipped because they miss the SLOs at the
    # rate to serve: what an infeasibility report evaluates (``service_solve``)
    missed: list = field(default_factory=list)


def _prefill_estimate_rps(rep, knobs: ServingKnobs, load: ServiceLoad) -> float:
    """queues * C / (s step(C - 1, 1)), the order groups are visited in (module doc)."""
    step = rep.step_ns(knobs, knobs.prefill_chunk_tokens - 1, 1, load.decode_context_tokens)
    return rep.queues * knobs.prefill_chunk_tokens / (load.prompt_tokens * step * 1e-9)


def _groups(knobs: list[ServingKnobs]) -> list[list[ServingKnobs]]:
    """Knob tuples grouped by (C, m_p, m_d): they differ only in B."""
    def key(k):
        return (k.prefill_chunk_tokens, k.prefill_micro_batches, k.decode_micro_batches)
    return [list(g) for _, g in groupby(sorted(knobs, key=key), key=key)]


def _feasible(c: ServiceCandidate, min_goodput_rps: float | None) -> bool:
    return c.meets_rate is not False and (min_goodput_rps is None or c.goodput_rps >= min_goodput_rps)


def prepared_groups(inst, num_gpus: int, load: ServiceLoad, loads: tuple[tuple[int, ...], ...],
                    ranks_by_ep: dict[int, list], degrees: list[Degrees] | None = None
                    ) -> tuple[list[tuple[Degrees, list[ServingKnobs], Replica]], int]:
    """(configuration, knob group, replica) of every configuration (``degrees``, default
    all on ``num_gpus``) with the placement ``ranks_by_ep[ep][i]`` for MoE layer i,
    Megatron's layout and even stages, in decreasing order of the prefill estimate; and the
    number of configurations no knob tuple fits."""
    gpn, moe_ids = inst.hardware.gpus_per_node, inst.model.moe_layer_ids
    out, without = [], 0
    for deg in degrees if degrees is not None else service_degrees(inst, num_gpus):
        facts = LinkFacts.of(megatron_layout(deg, gpn))
        stages = even_stages(inst.model.num_layers, deg.pp)
        hot = {l: hot_load(row, ranks_by_ep[deg.ep][i]) for i, (l, row) in enumerate(zip(moe_ids, loads))}
        knobs = admissible_knobs(replica_memory(inst, deg, stages, load), deg.pp,
                                 inst.search.max_micro_batches)
        if not knobs:
            without += 1
            continue
        rep = replica(inst, deg, facts, stages, hot, load)
        out.extend((_prefill_estimate_rps(rep, group[0], load), deg, group, rep) for group in _groups(knobs))
    out.sort(key=lambda t: (-t[0], t[1], t[2][0]))
    return [(deg, group, rep) for _, deg, group, rep in out], without


def search(inst, num_gpus: int, load: ServiceLoad, slo: Slo, rate_rps: float | None,
           loads: tuple[tuple[int, ...], ...], ranks_by_ep: dict[int, list], primary: str = "goodput",
           prune: bool = True, degrees: list[Degrees] | None = None,
           min_goodput_rps: float | None = None,
           out_of_time: Callable[[], bool] | None = None) -> ServiceSearch:
    """Candidates of ``prepared_groups``. With ``prune``, groups whose widest tuple sustains
    less than the best feasible candidate's ``primary`` figure (goodput, or throughput /
    output tokens) are skipped. Once ``out_of_time()`` is true (checked before each group
    after the first) the rest are counted in ``unvisited`` and not evaluated."""
    out = ServiceSearch()
    groups, out.without_knobs = prepared_groups(inst, num_gpus, load, loads, ranks_by_ep, degrees)
    best, seen = 0.0, set()
    for visited, (deg, group, rep) in enumerate(groups):
        if visited and out_of_time is not None and out_of_time():
            out.unvisited = len(groups) - visited
            break
        widest = max(group, key=lambda k: k.max_running_requests)
        if prune and sustainable_rps(rep, widest, load) < best:
            out.pruned += 1
            continue
        seen.add(deg)
        found = evaluate_group(deg, group, rep, load, slo, rate_rps)
        out.candidates.extend(found)
        for c in found:
            if _feasible(c, min_goodput_rps):
                best = max(best, c.goodput_rps if primary == "goodput" else c.sustainable_rps)
    out.configurations = len(seen)
    return out
