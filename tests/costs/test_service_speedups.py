"""The speed-ups of the service search change no figure: each fast path equals a direct
computation done here from its definition.

- profile lookups: the nearest table is looked up once per shape; every efficiency equals the
  nearest table by log-shape (all rows scanned here) read at the token count;
- the first micro-batch's decode count, by arithmetic, equals dealing the step's items
  round-robin one by one;
- the memoised sustainable rate equals a fresh bisection.
"""

import math

import numpy as np
import pytest

from optimizer.costs.profile import Efficiency, load_profile
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import Replica, ServiceLoad, _start_rps, largest_rate, sustainable_rps
from optimizer.costs.serving.steady_state import steady_state
from optimizer.inputs.schema import GpuSpec


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
