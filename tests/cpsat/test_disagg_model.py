"""The disaggregated CP-SAT model equals brute force over every (prefill candidate, decode
candidate, replica counts): on random synthetic candidates (many), and end to end on a tiny
instance over every configuration and knob tuple (no dominance pruning in the oracle). A GPU
count one short of the sizing answer is proven infeasible."""

from __future__ import annotations

import itertools
import random

import pytest

from optimizer.costs.layout import Degrees
from optimizer.costs.serving.disagg import (
    INTER_NODE,
    INTRA_NODE,
    DecodeCandidate,
    PrefillCandidate,
    TransferClass,
)
from optimizer.cpsat.disagg_model import DisaggModel

KNOBS = None  # the model never reads knobs
DEG = Degrees(1, 1, 1, 1, 1, 1, 1)


def _random_candidates(rnd: random.Random, budget: int, gpn: int, rate: float | None):
    sizes = [g for g in (1, 2, 4, 8, 16) if g < budget]
    decode = []
    for _ in range(rnd.randint(1, 5)):
        g = rnd.choice(sizes)
        good = round(rnd.uniform(0.1, 5.0) * g, 6)
        n_min = None if good == 0 else (0 if rate is None else max(1, -(-int(rate * 1e6) // int(good * 1e6))))
        decode.append(DecodeCandidate(DEG, KNOBS, g, good, good * rnd.uniform(1.0, 1.3), n_min, 100))
    prefill = []
    for _ in range(rnd.randint(1, 5)):
        g = rnd.choice(sizes)
        for g_d in {c.gpus for c in decode}:
            for link in (INTRA_NODE, INTER_NODE):
                if (link == INTRA_NODE) != (g + g_d <= gpn) and rnd.random() < 0.8:
                    continue  # mostly the classes the enumeration makes, sometimes a useless one
                good = round(rnd.uniform(0.1, 5.0) * g * (1.1 if link == INTRA_NODE else 1.0), 6)
                n_min = 0 if rate is None else max(1, -(-int(rate * 1e6) // int(good * 1e6)))
                prefill.append(PrefillCandidate(DEG, KNOBS, g, TransferClass(link, min(g, g_d)), 0.0, good,
                                                good * rnd.uniform(1.0, 1.3), n_min, 100))
    return prefill, decode


def _pairs(prefill, decode, budget: int, gpn: int, use_min: bool):
    """Every feasible (i, j, xp, xd) with its (goodput, throughput, gpus) scores."""
    for (i, p), (j, d) in itertools.product(enumerate(prefill), enumerate(decode)):
        if min(p.gpus, d.gpus) != p.transfer.links:
            continue
        for xp in range(1, budget // p.gpus + 1):
            for xd in range(1, (budget - xp * p.gpus) // d.gpus + 1):
                gpus = xp * p.gpus + xd * d.gpus
                if (p.transfer.link == INTRA_NODE) != (gpus <= gpn):
                    continue
                if use_min and (xp < (p.min_replicas or 0) or d.min_replicas is None or xd < d.min_replicas):
                    continue
                yield ((min(xp * p.goodput_score, xd * d.goodput_score),
                        min(xp * p.throughput_score, xd * d.throughput_score), gpus), (i, j, xp, xd))


@pytest.mark.parametrize("seed", range(40))
def test_lexicographic_optimum_equals_brute_force(seed):
    rnd = random.Random(seed)
    gpn = rnd.choice([4, 8])
    budget = rnd.choice([6, 8, 12, 16, 24])
    rate = rnd.choice([None, rnd.uniform(0.5, 10.0)])
    prefill, decode = _random_candidates(rnd, budget, gpn, rate)
    if not prefill:
        pytest.skip("no prefill class drawn")
    pairs = list(_pairs(prefill, decode, budget, gpn, True))
    choice = DisaggModel(prefill, decode, budget, gpn).solve(
        [("goodput", "max"), ("throughput", "max"), ("gpus", "min")], 20.0)
    if not pairs:
        assert choice is None
        return
    best = max(((g, t, -n) for (g, t, n), _ in pairs))
    assert choice.proven
    assert tuple(p.value for p in choice.phases) == (best[0], best[1], -best[2])
    p, d = prefill[choice.prefill], decode[choice.decode]
    got = (min(choice.prefill_replicas * p.goodput_score, choice.decode_replicas * d.goodput_score),
           min(choice.prefill_replicas * p.throughput_score, choice.decode_replicas * d.throughput_score),
           -(choice.prefill_replicas * p.gpus + choice.decode_replicas * d.gpus))
    assert got == best


@pytest.mark.parametrize("seed", range(25))
def test_fewest_gpus_equals_brute_force_and_one_short_is_infeasible(seed):
    rnd = random.Random(100 + seed)
    gpn, budget = rnd.choice([4, 8]), rnd.choice([16, 24, 32])
    prefill, decode = _random_candidates(rnd, budget, gpn, None)
    if not prefill:
        pytest.skip("no prefill class drawn")
    target = int(rnd.uniform(1.0, 20.0) * 1e6)
    allowed = list(range(1, budget + 1))
    pairs = [(n, s) for (g, _, n), s in _pairs(prefill, decode, budget, gpn, False) if g >= target]
    model = DisaggModel(prefill, decode, budget, gpn, target, allowed_gpus=allowed, use_min_replicas=False)
    choice = model.solve([("gpus", "min")], 20.0)
    if not pairs:
        assert choice is None and model.last_status == "infeasible"
        return
    fewest = min(n for n, _ in pairs)
    assert choice.proven and choice.phases[0].value == fewest
    if fewest > 1:
        short = DisaggModel(prefill, decode, budget, gpn, target, allowed_gpus=list(range(1, fewest)),
                            use_min_replicas=False)
        assert short.solve([("gpus", "min")], 20.0) is None
        assert short.last_status == "infeasible"  # proven, not a time-out


# ----------------------------------------------------------------------------------------------
# End to end on a tiny instance: every configuration, every knob tuple, every count pair


def tiny_disagg() -> dict:
    """The tiny service instance on 8 GPUs, 4 per node (so both links occur)."""
    import copy

    from tests.oracles.tiny_service import TINY
    doc = copy.deepcopy(TINY)
    doc["name"] = "tiny_disagg"
    doc["hardware"].update(num_gpus=8, gpus_per_node=4)
    doc["workload"]["arrival_rate_rps"] = 30.0
    return doc


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["goodput", "throughput"])
def test_solve_equals_brute_force_over_every_configuration(objective):
    from optimizer.costs.serving.disagg import (
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
    from optimizer.cpsat.disagg_solve import disagg_inputs, solve_disagg
    from optimizer.inputs.schema import Instance

    inst = Instance.model_validate(tiny_disagg())
    result = solve_disagg(inst, objective=objective, time_limit_s=60)
    shared = disagg_inputs(inst, 8)
    load, slo, rate = shared.load, shared.slo, 30.0
    num_bytes = kv_transfer_bytes(inst, load.prompt_tokens)
    prefill, decode = [], []
    for g in (1, 2, 4):
        for deg in service_degrees(inst, g):
            stages = even_stages(inst.model.num_layers, deg.pp)
            mem_p = replica_memory(inst, deg, stages, prompt_kv_load(load))
            rep_p, _ = _replica(inst, deg, prefill_load(load), shared.loads, shared.ranks_by_ep)
            prefill += [(deg, k, rep_p) for k in prefill_knobs(mem_p, deg.pp, load.prompt_tokens, 32)]
            mem_d = replica_memory(inst, deg, stages, load)
            room = mem_d.capacity_bytes - mem_d.fixed_bytes
            limit = room // (mem_d.kv_bytes_per_request + mem_d.activation_bytes_per_token)
            rep_d, _ = _replica(inst, deg, load, shared.loads, shared.ranks_by_ep)
            for cap in running_caps(min(4096, limit)) if limit >= 1 else []:  # every B, not only the largest
                for m_d in micro_batch_counts(deg.pp, 32):
                    if m_d <= cap:
                        decode.append(evaluate_decode(deg, ServingKnobs(cap, cap, 1, m_d), rep_d, load, slo, rate))
    cache = {}

    def prefill_at(index, cls):
        if (index, cls) not in cache:
            deg, k, rep = prefill[index]
            seconds = transfer_seconds(inst, num_bytes, cls.links, cls.link)
            cache[(index, cls)] = evaluate_prefill(deg, k, rep, load, slo, rate, {cls: seconds})[0]
        return cache[(index, cls)]
    best = None
    for i, (deg_p, _, _) in enumerate(prefill):
        for d in decode:
            if d.min_replicas is None:
                continue
            for xp in range(1, 8 // deg_p.num_gpus + 1):
                for xd in range(max(1, d.min_replicas), (8 - xp * deg_p.num_gpus) // d.gpus + 1):
                    gpus = xp * deg_p.num_gpus + xd * d.gpus
                    cls = TransferClass(INTRA_NODE if gpus <= 4 else INTER_NODE, min(deg_p.num_gpus, d.gpus))
                    p = prefill_at(i, cls)
                    if p.min_replicas is None or xp < p.min_replicas:
                        continue
                    scores = {"goodput": min(xp * p.goodput_score, xd * d.goodput_score),
                              "throughput": min(xp * p.throughput_score, xd * d.throughput_score)}
                    other = "throughput" if objective == "goodput" else "goodput"
                    key = (scores[objective], scores[other], -gpus)
                    best = key if best is None or key > best else best
    assert len(prefill) > 20 and len(decode) > 40
    assert result.status == "optimal"
    assert tuple(p.value for p in result.choice.phases) == (best[0], best[1], -best[2])
    ev = result.evaluation  # the plan, evaluated from its pools alone, has the chosen scores
    assert min(ev.prefill.replicas * ev.prefill_figures.goodput_score,
               ev.decode.replicas * ev.decode_figures.goodput_score) == best[0 if objective == "goodput" else 1]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["goodput", "throughput"])
def test_auto_agg_side_equals_the_service_solve(objective):
    """--mode auto's aggregated search (one prediction rules a knob group out) reaches the
    same optimum as ``moeopt solve``'s service search."""
    from optimizer.cpsat.disagg_auto import solve_agg_for_auto
    from optimizer.cpsat.service_solve import solve_service
    from optimizer.inputs.schema import Instance
    from tests.cpsat.test_service_solve import UNREACHED_LIMIT_S
    from tests.oracles.tiny_service import TINY
    inst = Instance.model_validate(TINY)
    full = solve_service(inst, objective=objective, time_limit_s=UNREACHED_LIMIT_S, exhaustive=True)
    fast = solve_agg_for_auto(inst, None, objective, UNREACHED_LIMIT_S, None, None)
    assert full.status == fast.status == "optimal"
    assert [p.value for p in fast.choice.phases] == [p.value for p in full.choice.phases]
    assert len(fast.searched.candidates) < len(full.searched.candidates)


@pytest.mark.slow
def test_size_pruning_keeps_the_fewest_gpus():
    """Decode configurations skipped for sizing (their bound cannot beat a deployment found)
    never change the answer: the same fewest GPUs as with every candidate evaluated."""
    from optimizer.cpsat.disagg_size import DisaggSizer
    from optimizer.inputs.schema import Instance
    from tests.cpsat.test_service_solve import UNREACHED_LIMIT_S
    inst = Instance.model_validate(tiny_disagg())
    rates = [50.0, 200.0, 400.0, 700.0]
    allowed = list(range(1, 17))
    pruned = DisaggSizer(inst, allowed, 16, rates=rates)
    full = DisaggSizer(inst, allowed, 16)
    assert pruned.found.pruned > 0 and full.found.pruned == 0
    for rate in rates:
        a, b = pruned.size(rate, UNREACHED_LIMIT_S), full.size(rate, UNREACHED_LIMIT_S)
        assert a.status == b.status == "optimal"
        assert a.num_gpus == b.num_gpus
