"""The speed-ups of the service search change no figure: each fast path equals a direct
computation done here from its definition.

- profile lookups: the nearest table is looked up once per shape; every efficiency equals the
  nearest table by log-shape (all rows scanned here) read at the token count;
- the first micro-batch's decode count, by arithmetic, equals dealing the step's items
  round-robin one by one;
- the memoised sustainable rate equals a fresh bisection;
- ``steady_state.mean`` is ``ndarray.mean`` to the bit;
- ``meets_at`` (only the figures the SLOs ask for) gives ``meets(predict(...))``'s verdict;
- the memoised ``dense_layer_ns`` equals a fresh computation, also for two instances that
  share the efficiency object (same GPU and model) but not the TP link.
"""

import math
from pathlib import Path

import numpy as np
import pytest

from optimizer.costs import tables
from optimizer.costs.layout import Degrees
from optimizer.costs.profile import Efficiency, efficiency_of, load_profile
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import (
    PERCENTILES,
    Replica,
    ServiceLoad,
    Slo,
    _start_rps,
    largest_rate,
    meets,
    meets_at,
    predict,
    sustainable_rps,
)
from optimizer.costs.serving.steady_state import mean, steady_state
from optimizer.costs.tables import LinkFacts
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import GpuSpec, Instance

DEEPSEEK = Path(__file__).resolve().parents[2] / "instances" / "deepseek_v3_fp8_h200_service.json"


def _nearest(rows, key):
    best, best_d = None, math.inf
    for shape, table in rows:
        d = sum((math.log2(a) - math.log2(b)) ** 2 for a, b in zip(shape, key))
        if d < best_d:
            best, best_d = table, d
    return best


@pytest.mark.parametrize("preset", ["h200-sxm", "h100-sxm"])
def test_profile_lookups_equal_a_full_scan(preset):
    gpu = GpuSpec(peak_tflops=989.4, memory_gb=80.0, hbm_bandwidth_gb_s=3350.0)
    profile = load_profile(preset)
    eff = Efficiency(gpu, profile)
    rng = np.random.default_rng(0)
    dtypes = sorted({t.dtype for t in profile.gemm})
    for _ in range(300):  # repeated shapes at many token counts: the per-shape memo is hit
        dtype = dtypes[int(rng.integers(len(dtypes)))]
        n, k = int(rng.choice([512, 2048, 4096, 7168])), int(rng.choice([768, 2048, 7168]))
        m = float(rng.integers(1, 20000))
        rows = [((t.n, t.k), t) for t in profile.gemm if t.dtype == dtype]
        assert eff.gemm_eta(dtype, m, n, k) == _nearest(rows, (n, k)).over_m.at(m)
    gdtypes = sorted({t.dtype for t in profile.grouped_gemm})
    for _ in range(300):
        dtype = gdtypes[int(rng.integers(len(gdtypes)))]
        hidden, inter, per_gpu = 7168, float(rng.choice([768, 2048])), int(rng.choice([4, 8, 32]))
        tokens = float(rng.uniform(0.01, 500))
        rows = [((t.hidden, t.inter, t.experts_per_gpu), t) for t in profile.grouped_gemm if t.dtype == dtype]
        assert eff.grouped_eta(dtype, tokens, hidden, inter, per_gpu) == \
            _nearest(rows, (hidden, inter, per_gpu)).over_tokens_per_expert.at(tokens)
    ops = sorted({(t.op, t.link) for t in profile.collectives})
    for _ in range(200):
        op, link = ops[int(rng.integers(len(ops)))]
        peers, size = int(rng.choice([2, 4, 8, 16])), float(rng.uniform(1e3, 1e9))
        rows = [((t.peers,), t) for t in profile.collectives if t.op == op and t.link == link]
        table = _nearest(rows, (peers,))
        assert eff.collective(op, link, peers, size) == (table.latency_us * 1e-6, table.over_bytes.at(size))


def test_first_micro_batch_decodes_by_arithmetic():
    # the replica's step deals chunks then decodes round-robin over m micro-batches; the
    # decodes of micro-batch 0 are the items i in [chunks, items) with i % m == 0
    for items in range(0, 60):
        for chunks in range(0, items + 1):
            for m in range(1, 7):
                dealt = sum(1 for i in range(chunks, items) if i % m == 0)
                assert -(-items // m) - (-(-chunks // m)) == dealt


def test_memoised_sustainable_rate_equals_a_fresh_bisection():
    def affine(knobs, c, n, ctx):
        return 1_000_000 + 2_000 * c + 50_000 * n + n * ctx
    rep = Replica(affine, queues=3, gpus=6)
    load = ServiceLoad(3000, 200, 0.3)
    for knobs in (ServingKnobs(16, 1024, 1, 1), ServingKnobs(64, 4096, 1, 1), ServingKnobs(256, 8192, 1, 1)):
        fresh = largest_rate(lambda r, k=knobs: steady_state(rep, k, load, r / 3) is not None,
                              _start_rps(rep, knobs, load))
        assert sustainable_rps(rep, knobs, load) == fresh == sustainable_rps(rep, knobs, load)


def _affine(knobs, c, n, ctx):
    return 1_000_000 + 2_000 * c + 50_000 * n + n * ctx


@pytest.mark.parametrize("queues", [1, 4])
def test_meets_at_gives_the_verdict_of_the_full_prediction(queues):
    # long prompts (an M/G/k wait) with a spread of lengths, and short ones (gated admission:
    # on one queue the rest of the step under way); SLO limits just below and just above
    # each predicted figure, alone and together, at every percentile and at rates up to past
    # the sustainable one
    rep = Replica(_affine, queues=queues, gpus=8)
    knobs = ServingKnobs(64, 4096, 1, 1)
    loads = (ServiceLoad(3000, 200, 0.3, (1500, 2800, 6000), (50, 150, 400),
                         tuple(range(1000, 5000, 250))),
             ServiceLoad(300, 200))
    verdicts = []
    for load in loads:
        cap = sustainable_rps(rep, knobs, load)
        for rate in cap * np.array([0.05, 0.3, 0.6, 0.9, 0.999, 1.2]):
            m = predict(rep, knobs, load, rate)
            for p in PERCENTILES:
                ttft = m.ttft_at(p) if m.stable else 1.0
                tpot = m.tpot_at(p) if m.stable else 10.0
                e2e = ttft + (load.output_tokens - 1) * tpot / 1e3
                for scale in (0.999, 1.001):
                    for slo in (Slo(max_ttft_s=ttft * scale, percentile=p),
                                Slo(max_tpot_ms=tpot * scale, percentile=p),
                                Slo(max_e2e_latency_s=e2e * scale, percentile=p),
                                Slo(max_ttft_s=ttft * scale, max_tpot_ms=tpot * 1.001, percentile=p),
                                Slo(max_ttft_s=ttft * 1.001, max_tpot_ms=tpot * scale, percentile=p),
                                Slo(percentile=p)):
                        want = meets(m, slo, load)
                        assert meets_at(rep, knobs, load, rate, slo) == want, (rate, slo)
                        verdicts.append(want)
    assert 0.2 < sum(verdicts) / len(verdicts) < 0.8  # both verdicts are exercised


def test_memoised_dense_layer_equals_a_fresh_computation():
    # the memo lives in the efficiency object of (GPU, model, profile); a second instance with
    # another TP link shares that object, so the link must be part of the key
    inst = load_model(DEEPSEEK, Instance, "instance")
    doc = inst.model_dump()
    doc["hardware"]["intra_node_bandwidth_gb_s"] = inst.hardware.intra_node_bandwidth_gb_s / 3
    doc["hardware"]["inter_node_bandwidth_gb_s"] = inst.hardware.inter_node_bandwidth_gb_s / 3
    slow = Instance.model_validate(doc)
    assert efficiency_of(slow) is efficiency_of(inst)
    assert not efficiency_of(inst).flat  # the profiled path (the flat one: the static-batch tests)
    rng = np.random.default_rng(0)
    steps = [(tokens, decodes, float(rng.integers(1, 10**12)), float(rng.integers(1, 10**9)))
             for tokens, decodes in ((1, 1), (37, 36), (4096, 0), (5000, 200))]
    moe, dense = inst.model.moe_layer_ids[0], 0
    assert dense not in inst.model.moe_layer_ids
    for _ in range(2):  # the second pass reads the memo
        for one in (inst, slow):
            for tp, inter in ((1, False), (4, False), (8, True)):
                deg, facts = Degrees(tp, 1, 8 // tp, 8, 1, 1, 1), LinkFacts(8, 0, inter, False, False)
                for layer in (moe, dense):
                    for tokens, decodes, flops, kv in steps:
                        got = tables.dense_layer_ns(one, deg, layer, tokens, flops, kv, facts, decodes)
                        assert got == tables._dense_layer_ns(one, deg, layer, tokens, flops, kv, facts, decodes)
    fast = tables.dense_layer_ns(inst, Degrees(8, 1, 1, 8, 1, 1, 1), moe, 4096, 1e13, 1e8,
                                 LinkFacts(8, 0, False, False, False), 0)
    slower = tables.dense_layer_ns(slow, Degrees(8, 1, 1, 8, 1, 1, 1), moe, 4096, 1e13, 1e8,
                                   LinkFacts(8, 0, False, False, False), 0)
    assert slower[1] > fast[1] > 0  # the TP all-reduces take longer on the slower link


def test_mean_is_ndarray_mean_to_the_bit():
    rng = np.random.default_rng(2)
    for n in [*range(1, 40), 100, 1000]:
        for _ in range(50):
            x = rng.random(n) * 10.0 ** rng.uniform(-6, 6)
            assert mean(x) == float(x.mean())
        assert mean(np.zeros(n)) == 0.0
