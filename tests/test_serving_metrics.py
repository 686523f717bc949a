"""Serving metrics of one knob tuple against closed forms worked by hand, with a step-time
test double of known affine coefficients."""

import math

import pytest

from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import (Replica, ServiceLoad, Slo, goodput_rps, meets, predict,
                                             sustainable_rps)

MS = 1_000_000  # ns


def flat_decode(knobs, c, n, ctx):
    """10 ms per pass plus 10 us per prompt token; decodes cost nothing extra."""
    return 10 * MS + 10_000 * c


REP = Replica(flat_decode, queues=1, gpus=8)
LOAD = ServiceLoad(prompt_tokens=2000, output_tokens=100)
KNOBS = ServingKnobs(64, 1000, 1, 1)


def test_metrics_by_hand():
    # full step 10 + 10 = 20 ms, decode-only step 10 ms; S = 2000 / 1000 * 20 ms = 40 ms;
    # lambda = 2/s: rho = 0.08; TPOT = 0.08 * 20 + 0.92 * 10 = 10.8 ms;
    # running n = lambda D TPOT = 2 * 100 * 0.0108 = 2.16 (Little);
    # W (M/D/1) = rho S / (2 (1 - rho)) = 0.08 * 0.04 / 1.84 = 1.7391 ms;
    # TTFT = W + TPOT / 2 + ceil(2000 / 1000) * 20 ms = 1.7391 + 5.4 + 40 = 47.1391 ms;
    # p90: 1 - 0.9 >= rho, no wait: 45.4 ms; p99: (W / rho) ln(rho / 0.01) = 21.739 ms * ln 8
    m = predict(REP, KNOBS, LOAD, 2.0)
    assert m.stable and (m.step_full_ns, m.step_decode_ns) == (20 * MS, 10 * MS)
    assert m.tpot_ms == pytest.approx(10.8)
    assert m.running_requests == pytest.approx(2.16)
    assert m.utilization == pytest.approx(0.08)
    assert m.ttft_mean_s == pytest.approx(0.0471391, rel=1e-5)
    assert m.ttft_p90_s == pytest.approx(0.0454)
    assert m.ttft_p99_s == pytest.approx(0.0454 + 0.04 * 0.08 / 1.84 / 0.08 * math.log(8))
    assert m.output_tokens_per_s_per_gpu == pytest.approx(2 * 100 / 8)
    assert m.tokens_per_s_per_user == pytest.approx(1000 / 10.8)
    assert m.e2e_p90_s == pytest.approx(0.0454 + 99 * 0.0108)


def test_sustainable_rate_prefill_bound():
    # rho < 1 <=> lambda < C / (s * full) = 1000 / (2000 * 0.02) = 25/s; at 25/s
    # n = 25 * 100 * 0.02 = 50 <= B = 64: the prefill server is the bottleneck
    assert sustainable_rps(REP, KNOBS, LOAD) == pytest.approx(25.0, rel=2e-7)
    assert not predict(REP, KNOBS, LOAD, 25.0 * 1.001).stable


def test_sustainable_rate_decode_slot_bound():
    # B = 32: TPOT = 10 ms (1 + lambda / 25), n = lambda D TPOT = lambda (1 + lambda / 25);
    # n = 32 at lambda^2 / 25 + lambda - 32 = 0: lambda = 12.5 (sqrt(1 + 128 / 25) - 1) = 18.4233
    knobs = ServingKnobs(32, 1000, 1, 1)
    assert sustainable_rps(REP, knobs, LOAD) == pytest.approx(12.5 * (math.sqrt(1 + 128 / 25) - 1), rel=2e-7)


def test_queues_split_the_rate():
    # four queues at 8/s see 2/s each: the figures of test_metrics_by_hand, per-GPU rates x4
    rep4 = Replica(flat_decode, queues=4, gpus=8)
    one, four = predict(REP, KNOBS, LOAD, 2.0), predict(rep4, KNOBS, LOAD, 8.0)
    assert four.ttft_p90_s == pytest.approx(one.ttft_p90_s) and four.tpot_ms == pytest.approx(one.tpot_ms)
    assert four.output_tokens_per_s_per_gpu == pytest.approx(4 * one.output_tokens_per_s_per_gpu)
    assert sustainable_rps(rep4, KNOBS, LOAD) == pytest.approx(100.0, rel=2e-7)


def test_goodput_tpot_and_ttft_bound():
    # TPOT <= 15 ms: 10 (1 + lambda / 25) <= 15 <=> lambda <= 12.5
    assert goodput_rps(REP, KNOBS, LOAD, Slo(max_tpot_ms=15.0)) == pytest.approx(12.5, rel=2e-7)
    # p90 TTFT <= 45.2 ms: while rho = lambda / 25 <= 0.1 there is no p90 wait and
    # TTFT = 5 (1 + lambda / 25) + 40 ms <= 45.2 <=> lambda <= 1 (rho = 0.04)
    assert goodput_rps(REP, KNOBS, LOAD, Slo(max_ttft_s=0.0452)) == pytest.approx(1.0, rel=2e-7)
    # an SLO no rate meets: TPOT below the 10 ms of an idle step
    assert goodput_rps(REP, KNOBS, LOAD, Slo(max_tpot_ms=9.0)) == 0.0


def test_goodput_meets_and_is_tight():
    slo = Slo(max_ttft_s=0.2, max_tpot_ms=18.0, percentile=99)
    g = goodput_rps(REP, KNOBS, LOAD, slo)
    assert 0 < g < sustainable_rps(REP, KNOBS, LOAD)
    assert meets(predict(REP, KNOBS, LOAD, g), slo, LOAD)
    assert not meets(predict(REP, KNOBS, LOAD, g * 1.0001), slo, LOAD)


def affine(knobs, c, n, ctx):
    """1 ms + 2 us per prompt token + 50 us per decode + 1 ns per decode context token."""
    return MS + 2_000 * c + 50_000 * n + n * ctx


def test_steady_state_is_a_fixed_point():
    # with decodes that cost time the running count solves n = lambda D TPOT(ceil n)
    rep = Replica(affine, queues=1, gpus=8)
    load, knobs = ServiceLoad(1000, 500), ServingKnobs(256, 2048, 1, 1)
    m = predict(rep, knobs, load, 5.0)
    n = math.ceil(m.running_requests - 1e-9)
    ctx = 1000 + 250
    full, idle = affine(knobs, 2048, n, ctx), affine(knobs, 0, n, ctx)
    rho = 5.0 * 1000 / 2048 * full * 1e-9
    assert (m.step_full_ns, m.step_decode_ns) == (full, idle)
    assert m.tpot_ms == pytest.approx((rho * full + (1 - rho) * idle) / 1e6)
    assert m.running_requests == pytest.approx(5.0 * 500 * m.tpot_ms / 1e3)


def test_group_goodput_equals_one_by_one():
    # goodput(B) = min(goodput at the largest B, sustainable(B)): checked against a separate
    # bisection per B
    from optimizer.costs.layout import Degrees
    from optimizer.costs.serving.candidates import evaluate_candidate, evaluate_group
    rep = Replica(affine, queues=2, gpus=8)
    load, slo = ServiceLoad(1000, 300), Slo(max_ttft_s=0.5, max_tpot_ms=25.0)
    deg = Degrees(4, 1, 2, 1, 1, 8, 1)
    group = [ServingKnobs(b, 2048, 1, 1) for b in (4, 16, 48, 128, 512)]
    together = evaluate_group(deg, group, rep, load, slo, 10.0)
    alone = [evaluate_candidate(deg, k, rep, load, slo, 10.0) for k in group]
    for a, b in zip(together, alone):
        assert a.goodput_rps == pytest.approx(b.goodput_rps, rel=1e-8)
        assert a.sustainable_rps == b.sustainable_rps and a.meets_rate == b.meets_rate
    assert len({round(c.goodput_rps, 6) for c in together}) >= 3  # the cap binds for small B
