"""The disaggregated service front (``moeopt pareto --mode disagg``) equals brute force: on a
tiny service, per TPOT level, the most goodput per GPU over EVERY prefill configuration and
knob tuple (every transfer class), EVERY decode configuration and knob tuple (every running
cap B, not only the largest) evaluated at the level, and every replica count pair on at most
the budget; so the pruning of ``search.disagg_pareto`` (its module doc) loses no point."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest

from optimizer.costs.serving.disagg import (
    INTER_NODE,
    INTRA_NODE,
    TransferClass,
    evaluate_decode,
    evaluate_prefill,
    kv_transfer_bytes,
    prefill_knobs,
    prefill_load,
    prompt_kv_load,
    transfer_seconds,
)
from optimizer.costs.serving.disagg_search import _replica
from optimizer.costs.serving.knobs import ServingKnobs, micro_batch_counts, running_caps
from optimizer.costs.serving.replica import even_stages, replica_memory, service_degrees
from optimizer.cpsat.disagg_solve import disagg_inputs
from optimizer.inputs.schema import Instance
from optimizer.search.disagg_pareto import disagg_front, level_slo
from tests.oracles.tiny_service import TINY


def tiny_front_doc(num_gpus: int = 4, rate_rps: float | None = 20.0) -> dict:
    doc = copy.deepcopy(TINY)
    doc["name"] = "tiny_front"
    doc["hardware"].update(num_gpus=num_gpus, gpus_per_node=4)
    if rate_rps is None:
        del doc["workload"]["arrival_rate_rps"]
        doc["workload"]["concurrency"] = 8  # a closed loop: no rate to serve (min replicas 0)
    else:
        doc["workload"]["arrival_rate_rps"] = rate_rps
    return doc


def _every_prefill(inst, shared, sizes):
    load = shared.load
    out = []
    for g in sizes:
        for deg in service_degrees(inst, g):
            mem = replica_memory(inst, deg, even_stages(inst.model.num_layers, deg.pp), prompt_kv_load(load))
            rep, _ = _replica(inst, deg, prefill_load(load), shared.loads, shared.ranks_by_ep)
            out += [(deg, k, rep) for k in prefill_knobs(mem, deg.pp, load.prompt_tokens, 32)]
    return out


def _every_decode(inst, shared, sizes, slo, rate):
    load = shared.load
    out = []
    for g in sizes:
        for deg in service_degrees(inst, g):
            mem = replica_memory(inst, deg, even_stages(inst.model.num_layers, deg.pp), load)
            limit = (mem.capacity_bytes - mem.fixed_bytes) // (mem.kv_bytes_per_request + mem.activation_bytes_per_token)
            rep, _ = _replica(inst, deg, load, shared.loads, shared.ranks_by_ep)
            for cap in running_caps(min(4096, limit)) if limit >= 1 else []:  # every B
                for m_d in micro_batch_counts(deg.pp, 32):
                    if m_d <= cap:
                        out.append(evaluate_decode(deg, ServingKnobs(cap, cap, 1, m_d), rep, load, slo, rate))
    return out


def brute_force_best(inst: Instance, eps: float, cache: dict) -> Fraction | None:
    """The most goodput score per GPU of any deployment meeting every requirement with the
    decode TPOT within ``eps`` ms: every (prefill, decode, xp, xd), no pruning. ``cache``
    keeps the prefill figures across levels (a prefill replica has no TPOT)."""
    budget, gpn = inst.hardware.num_gpus, inst.hardware.gpus_per_node
    if "shared" not in cache:
        cache["shared"] = disagg_inputs(inst, budget)
    shared = cache["shared"]
    rate = inst.workload.arrival_rate_rps
    sizes = [g for g in (1, 2, 4, 8) if g < budget and (gpn % g == 0 or g % gpn == 0)]
    slo = level_slo(shared.slo, eps)
    num_bytes = kv_transfer_bytes(inst, shared.load.prompt_tokens)
    if "prefill" not in cache:
        cache["prefill"] = _every_prefill(inst, shared, sizes)
    prefill = cache["prefill"]
    decode = _every_decode(inst, shared, sizes, slo, rate)

    def prefill_at(index, cls):
        if (index, cls) not in cache:
            deg, k, rep = prefill[index]
            seconds = transfer_seconds(inst, num_bytes, cls.links, cls.link)
            cache[(index, cls)] = evaluate_prefill(deg, k, rep, shared.load, slo, rate, {cls: seconds})[0]
        return cache[(index, cls)]
    best = None
    for i, (deg_p, _, _) in enumerate(prefill):
        gp = deg_p.num_gpus
        for d in decode:
            if d.min_replicas is None:
                continue
            for xp in range(1, budget // gp + 1):
                for xd in range(max(1, d.min_replicas), (budget - xp * gp) // d.gpus + 1):
                    gpus = xp * gp + xd * d.gpus
                    p = prefill_at(i, TransferClass(INTRA_NODE if gpus <= gpn else INTER_NODE, min(gp, d.gpus)))
                    if p.min_replicas is None or xp < p.min_replicas:
                        continue
                    ratio = Fraction(min(xp * p.goodput_score, xd * d.goodput_score), gpus)
                    best = ratio if best is None or ratio > best else best
    return best


@pytest.mark.slow
@pytest.mark.parametrize(("num_gpus", "rate_rps"), [(4, 20.0), (6, None)],
                         ids=["4-gpus-one-node-rate-20", "6-gpus-two-nodes-no-rate"])
def test_front_equals_brute_force_at_every_level(num_gpus, rate_rps):
    inst = Instance.model_validate(tiny_front_doc(num_gpus, rate_rps))
    front = disagg_front(inst, levels=4, time_limit_s=600)
    assert front.unsolved == 0 and len(front.levels_ms) == 4
    found, cache = 0, {}
    for eps, point in zip(front.levels_ms, front.points):
        best = brute_force_best(inst, eps, cache)
        if best is None or best == 0:
            assert point is None
            continue
        found += 1
        assert point.choice.proven
        assert Fraction(point.choice.goodput_score, point.choice.gpus) == best
        ev = point.evaluation  # the plan evaluated from its pools alone: the level's TPOT holds
        assert ev.decode_at.tpot_at(inst.requirements.percentile) <= eps * (1 + 1e-9)
        assert ev.num_gpus == point.choice.gpus <= inst.hardware.num_gpus
    assert found >= 2  # the test sees more than one level's optimum
