"""Serving metrics of one knob tuple against closed forms worked by hand, with a step-time
test double of known affine coefficients."""

import math

import pytest

from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import Replica, ServiceLoad, Slo, goodput_rps, meets, predict, sustainable_rps

MS = 1_000_000  # ns


def per_token(knobs, c, n, ctx):
    """10 ms per step plus 10 us per token of it, prompt or decode."""
    return 10 * MS + 10_000 * (c + n)


REP = Replica(per_token, queues=1, gpus=8)
LOAD = ServiceLoad(prompt_tokens=2000, output_tokens=100)
KNOBS = ServingKnobs(64, 1000, 1, 1)


def _root(f, low, high):
    """The x in [low, high] where the increasing f crosses 0 (plain bisection)."""
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if f(mid) < 0 else (low, mid)
    return low


def _by_hand(rate, budget=1000, prompt=2000, output=100):
    """The fixed point of the equations of docs/serving-model.md for this step double:
    a prompt's step holds all C = 1000 tokens, so full = 20 ms whatever n is;
    rho = rate s / (C - n) * 20 ms; a decode-only step with max(1, n) decodes takes
    10 + 0.01 max(1, n) ms; TPOT = rho 20 + (1 - rho) idle; n = rate D TPOT."""
    n = 0.0
    for _ in range(500):
        rho = rate * prompt / (budget - n) * 0.020
        idle_ms = 10 + 0.01 * max(1, n)
        tpot_ms = rho * 20 + (1 - rho) * idle_ms
        n = rate * output * tpot_ms / 1e3
    return n, rho, tpot_ms


def test_metrics_by_hand():
    # rate 2/s: n = 2.164329, rho = 0.0801735, TPOT = 10.821643 ms (iterating _by_hand);
    # S = 2000 / (1000 - n) * 20 ms = 40.0868 ms; W = rho S / (2 (1 - rho)) = 1.74701 ms;
    # own steps = 2000 / (1000 - n) * 20 ms = 40.0868 ms; residual (1 - e^-n) TPOT / 2 = 4.78951 ms;
    # TTFT mean = 46.6233 ms; p90: 1 - 0.9 >= rho, no wait: 44.8763 ms;
    # p99: (W / rho) ln(rho / 0.01) + 44.8763 ms = 90.2353 ms
    n, rho, tpot_ms = _by_hand(2.0)
    assert (n, rho, tpot_ms) == pytest.approx((2.164329, 0.0801735, 10.821643), rel=1e-6)
    m = predict(REP, KNOBS, LOAD, 2.0)
    assert m.stable and m.step_full_ns == 20 * MS
    assert m.tpot_ms == pytest.approx(tpot_ms, rel=1e-7)
    assert m.running_requests == pytest.approx(n, rel=1e-7)
    assert m.utilization == pytest.approx(rho, rel=1e-7)
    assert m.ttft_mean_s == pytest.approx(0.0466233, rel=1e-5)
    assert m.ttft_p90_s == pytest.approx(0.0448763, rel=1e-5)
    assert m.ttft_p99_s == pytest.approx(0.0902353, rel=1e-5)
    assert m.output_tokens_per_s_per_gpu == pytest.approx(2 * 100 / 8)
    assert m.tokens_per_s_per_user == pytest.approx(1000 / tpot_ms, rel=1e-7)
    assert m.e2e_p90_s == pytest.approx(0.0448763 + 99 * tpot_ms / 1e3, rel=1e-5)


def test_sustainable_rate_prefill_bound():
    # at rho = 1 every step holds a prompt: TPOT = 20 ms, n = rate * 100 * 0.02 = 2 rate;
    # rho = 40 rate / (1000 - 2 rate) = 1 at rate = 1000 / 42 = 23.8095/s (n = 47.6 <= B = 64)
    assert sustainable_rps(REP, KNOBS, LOAD) == pytest.approx(1000 / 42, rel=2e-7)
    assert not predict(REP, KNOBS, LOAD, 1000 / 42 * 1.001).stable


def test_sustainable_rate_decode_slot_bound():
    # B = 32 binds first: n = 32 gives rho = 40 rate / 968, idle = 10.32 ms,
    # TPOT = 10.32 + 9.68 rho, and 0.1 rate TPOT = 32: 0.04 rate^2 + 1.032 rate - 32 = 0
    a, b = 0.1 * 9.68 * 40 / 968, 0.1 * 10.32
    want = (-b + math.sqrt(b * b + 4 * a * 32)) / (2 * a)
    assert want == pytest.approx(18.1871, rel=1e-4)
    assert sustainable_rps(REP, ServingKnobs(32, 1000, 1, 1), LOAD) == pytest.approx(want, rel=1e-6)


def test_queues_split_the_rate():
    # four queues at 8/s see 2/s each: the figures of test_metrics_by_hand, per-GPU rates x4
    rep4 = Replica(per_token, queues=4, gpus=8)
    one, four = predict(REP, KNOBS, LOAD, 2.0), predict(rep4, KNOBS, LOAD, 8.0)
    assert four.ttft_p90_s == pytest.approx(one.ttft_p90_s) and four.tpot_ms == pytest.approx(one.tpot_ms)
    assert four.output_tokens_per_s_per_gpu == pytest.approx(4 * one.output_tokens_per_s_per_gpu)
    assert sustainable_rps(rep4, KNOBS, LOAD) == pytest.approx(4000 / 42, rel=2e-7)


def test_goodput_tpot_bound():
    # TPOT <= 15 ms: the rate where the by-hand fixed point reaches 15 ms
    want = _root(lambda r: _by_hand(r)[2] - 15.0, 0.0, 23.0)
    assert goodput_rps(REP, KNOBS, LOAD, Slo(max_tpot_ms=15.0)) == pytest.approx(want, rel=1e-6)
    # an SLO no rate meets: TPOT below the 10.01 ms of a lone decode step
    assert goodput_rps(REP, KNOBS, LOAD, Slo(max_tpot_ms=10.0)) == 0.0


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
    # with decodes that cost time (affine double), the result solves the equations of
    # docs/serving-model.md: prompt steps at n decodes, a decoding request's steps at n
    rep = Replica(affine, queues=1, gpus=8)
    load, knobs = ServiceLoad(1000, 500), ServingKnobs(256, 2048, 1, 1)
    m = predict(rep, knobs, load, 5.0)
    n, ctx = m.running_requests, 1000 + 250
    full = 1e6 + 2000 * (2048 - n) + 50_000 * n + n * ctx  # affine: exact at fractional n
    assert n > 1
    idle = 1e6 + 50_000 * n + n * ctx
    full_d = full
    rho = 5.0 * 1000 / (2048 - n) * full * 1e-9
    assert m.utilization == pytest.approx(rho, rel=1e-6)
    assert m.tpot_ms == pytest.approx((rho * full_d + (1 - rho) * idle) / 1e6, rel=1e-6)
    assert m.running_requests == pytest.approx(5.0 * 500 * m.tpot_ms / 1e3, rel=1e-6)


def test_group_goodput_equals_one_by_one():
    # goodput(B) = min(goodput at the largest B, sustainable(B)): checked against a separate
    # bisection per B
    from optimizer.costs.layout import Degrees
    from optimizer.costs.serving.candidates import evaluate_candidate, evaluate_group
    rep = Replica(affine, queues=2, gpus=8)  # test_group_goodput
    load, slo = ServiceLoad(1000, 300), Slo(max_ttft_s=0.5, max_tpot_ms=25.0)
    deg = Degrees(4, 1, 2, 1, 1, 8, 1)
    group = [ServingKnobs(b, 2048, 1, 1) for b in (4, 16, 48, 128, 512)]
    together = evaluate_group(deg, group, rep, load, slo, 10.0)
    alone = [evaluate_candidate(deg, k, rep, load, slo, 10.0) for k in group]
    for a, b in zip(together, alone):
        assert a.goodput_rps == pytest.approx(b.goodput_rps, rel=1e-8)
        assert a.sustainable_rps == b.sustainable_rps and a.meets_rate == b.meets_rate
    assert len({round(c.goodput_rps, 6) for c in together}) >= 3  # the cap binds for small B
