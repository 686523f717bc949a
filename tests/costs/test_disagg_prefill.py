"""The prefill pool's TTFT law (optimizer/costs/serving/disagg_prefill.py): by hand on a linear
test-double step, and against the discrete-event simulator on a solved disaggregated plan."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.bench_disagg_agreement import prefill_ttft_s, simulate_at
from optimizer.cli.main import main
from optimizer.costs.serving.disagg_mdk import md_k_decay, md_k_wait_probability
from optimizer.costs.serving.disagg_prefill import (
    RoutedPrefill,
    meets_prefill_slo,
    predict_prefill_only,
    waiting_law,
)
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import Replica, ServiceLoad, Slo, meets

REPO = Path(__file__).resolve().parents[2]


def per_token_step(tokens: int) -> float:
    """A step of x prompt tokens takes x / 1000 s."""
    return tokens / 1000.0


def test_steps_behind_waiting_prompts_by_hand():
    # s = 500, C = 1000: J = 0 -> one step of 500 tokens (0.5 s); J = 1 -> 1,000 tokens share
    # one step (1.0 s); J = 2 -> 1,500 tokens: one full step then 500 (1.0 + 0.5 s)
    law = RoutedPrefill(0.5, 0.5, 1.0, per_token_step, 500, 1000)
    assert [law.behind_s(j) for j in range(3)] == [0.5, 1.0, 1.5]
    # s = 2500, C = 1000: two full steps then 500 tokens alone (2.5 s)
    assert RoutedPrefill(0.5, 0.0, 1.0, per_token_step, 2500, 1000).behind_s(0) == 2.5


def test_quantile_by_hand():
    # s = C = 1000 (1 s a prompt), P_w = 0.5, no prompt ahead (r = 0), residual U ~ U(0, 1):
    # TTFT = 1 s without a wait; 1 + U with one. For 1 < t < 2, P(TTFT > t) = 0.5 (2 - t):
    # p90 at 0.5 (2 - t) = 0.1 -> t = 1.8; p50: 0.5 (2 - t) <= 0.5 for every t >= 1 -> 1.0
    law = RoutedPrefill(0.5, 0.0, 1.0, per_token_step, 1000, 1000)
    assert law.quantile_s(0.90) == pytest.approx(1.8, rel=1e-9)
    assert law.quantile_s(0.50) == pytest.approx(1.0, rel=1e-9)
    # the mean: 0.5 x 1 + 0.5 x (1 + 0.5) = 1.25
    assert law.mean_s() == pytest.approx(1.25, rel=1e-12)


def test_geometric_prompts_ahead_by_hand():
    # P_w = 1, r = 0.5, residual 0 < U < 1, prompts of one 1-s step each: P(J = j) = 0.5^(j+1),
    # TTFT = U + 1 + J. P(TTFT > 2.5) = P(J >= 2) + P(J = 1) P(U > 0.5) = 0.25 + 0.25 x 0.5
    law = RoutedPrefill(1.0, 0.5, 1.0, per_token_step, 1000, 1000)
    assert law.tail(2.5) == pytest.approx(0.375, rel=1e-12)


def test_length_biased_step_by_hand():
    # s = 500, C = 1000, r = 0.5: the step under way holds N = 1 + J' prompts, P(N = n) =
    # 0.5^n, and takes 0.5 N s (T(J') = 0.5 (J' + 1)). E[N] = 1 / (1 - r) = 2, E[N^2] =
    # (1 + r) / (1 - r)^2 = 6: E[T] = 1.0, E[T^2] = 0.25 x 6 = 1.5, E[T^2] / E[T] = 1.5 s
    law = RoutedPrefill(1.0, 0.5, 1.0, per_token_step, 500, 1000)
    assert law.length_biased_step_s() == pytest.approx(1.5, rel=1e-9)
    # no prompt ahead (r = 0): the step of one prompt, 0.5 s
    assert RoutedPrefill(1.0, 0.0, 1.0, per_token_step, 500, 1000).length_biased_step_s() == 0.5


def iterated_md_k(servers: int, offered_load: float, states: int = 600) -> np.ndarray:
    """M/D/k's P(Q = n) by pushing the chain Q' = max(Q - k, 0) + Poisson(a) forward from
    Q = 0 until it settles: an independent computation of what disagg_mdk solves by roots."""
    a = offered_load
    pois = np.array([math.exp(-a + i * math.log(a) - math.lgamma(i + 1)) for i in range(states)])
    dist = np.zeros(states)
    dist[0] = 1.0
    for _ in range(20000):
        base = np.zeros(states)
        base[0] = dist[: servers + 1].sum()
        base[1: states - servers] = dist[servers + 1:]
        new = np.convolve(base, pois)[:states]
        if np.abs(new - dist).sum() < 1e-13:
            break
        dist = new
    return dist


def test_md1_waits_with_probability_rho():
    # one server: P(Q >= 1) = rho for any service (the server's busy share)
    assert md_k_wait_probability(1, 0.8) == 0.8


@pytest.mark.parametrize("servers, rho", [(2, 0.7), (4, 0.8), (8, 0.8), (16, 0.75), (3, 0.9)])
def test_mdk_roots_against_iterating_the_chain(servers, rho):
    dist = iterated_md_k(servers, servers * rho)
    assert md_k_wait_probability(servers, servers * rho) == pytest.approx(dist[servers:].sum(), abs=1e-9)
    # the tail ratio far out: P(Q >= n + 1) / P(Q >= n) -> sigma
    tail = np.cumsum(dist[::-1])[::-1]
    n = servers + 40
    assert md_k_decay(rho) == pytest.approx(tail[n + 1] / tail[n], rel=1e-3)
    # a fixed service waits less often, and queues less, than an exponential one
    p_md, r_md = waiting_law(servers, rho, 0.0)
    p_mm, r_mm = waiting_law(servers, rho, 1.0)
    assert p_md < p_mm and r_md < r_mm


def test_waiting_law_with_exponential_service_is_mmk():
    # cv^2 = 1: Erlang C and rho^k. k = 2, a = 1.6: C(2, 1.6) = (1.6^2 / 2 x 2 / 0.4) / (1 + 1.6
    # + 6.4) = 6.4 / 9; r = 0.8^2 = 0.64. Half-way (cv^2 = 0.5): the mean of the two laws
    assert waiting_law(2, 0.8, 1.0) == pytest.approx((6.4 / 9, 0.64), rel=1e-12)
    p_md, r_md = waiting_law(2, 0.8, 0.0)
    assert waiting_law(2, 0.8, 0.5) == pytest.approx(((p_md + 6.4 / 9) / 2, (r_md + 0.64) / 2), rel=1e-12)


def test_prompts_joining_behind_share_the_step_by_hand():
    # s = 500, C = 1000 (a step of x tokens takes x / 1000 s), J = 0, P_w = 1, U ~ U(0, 1),
    # K | U ~ Poisson(2 U) prompts routed in behind while it waits: its step holds 500 tokens
    # (0.5 s) when K = 0, 1,000 (1 s) when K >= 1. P(TTFT > 1.25) = P(K = 0, U > 0.75) +
    # P(K >= 1, U > 0.25) = int_0.75^1 e^{-2u} du + int_0.25^1 (1 - e^{-2u}) du
    # = (e^{-1.5} - e^{-2}) / 2 + 0.75 - (e^{-0.5} - e^{-2}) / 2 = 0.5583
    law = RoutedPrefill(1.0, 0.0, 1.0, per_token_step, 500, 1000, joining_rps=2.0)
    assert law.own_s(0, 0) == 0.5 and law.own_s(0, 1) == 1.0 and law.own_s(0, 5) == 1.0
    expected = (math.exp(-1.5) - math.exp(-2.0)) / 2.0 + 0.75 - (math.exp(-0.5) - math.exp(-2.0)) / 2.0
    assert law.tail(1.25) == pytest.approx(expected, rel=1e-12)
    # the mean: E[U] + 0.5 + 0.5 P(K >= 1) = 0.5 + 0.5 + 0.5 (1 - int_0^1 e^{-2u} du) =
    # 1.0 + 0.5 (1 - (1 - e^{-2}) / 2)
    assert law.mean_s() == pytest.approx(1.0 + 0.5 * (1.0 - (1.0 - math.exp(-2.0)) / 2.0), rel=1e-12)


def test_joiners_dealt_over_the_queues_by_hand():
    # as above, but N ~ Poisson(2 U) prompts reach the k = 2 busy queues and this one takes
    # every second: K = floor(N / 2), K >= 1 iff N >= 2, P(N < 2 | u) = e^{-2u} (1 + 2u), whose
    # integral is -e^{-2u} (1 + u). P(TTFT > 1.25) = int_0.75^1 P(N < 2) du + int_0.25^1 P(N >= 2) du
    # = (1.75 e^{-1.5} - 2 e^{-2}) + 0.75 - (1.25 e^{-0.5} - 2 e^{-2}) = 0.75 + 1.75 e^{-1.5} - 1.25 e^{-0.5}
    law = RoutedPrefill(1.0, 0.0, 1.0, per_token_step, 500, 1000, joining_rps=2.0, deal=2)
    expected = 0.75 + 1.75 * math.exp(-1.5) - 1.25 * math.exp(-0.5)
    assert law.tail(1.25) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("queues, chunk, prompt", [(1, 1000, 2000), (4, 8192, 4000), (2, 16384, 4000), (8, 4096, 4000)])
def test_one_tail_evaluation_judges_the_slo_as_the_quantiles_do(queues, chunk, prompt):
    """meets_prefill_slo (the goodput bisection's test: P(TTFT > SLO) <= 1 - q) against meets()
    of the full prediction (TTFT_q by bisection on the tail) over rates up to saturation and
    SLOs around the predicted TTFTs, on a step of 10 ms + 10 us per token."""
    def per_token(knobs, c, n, ctx):
        return 10_000_000 + 10_000 * (c + n)
    rep = Replica(per_token, queues=queues, gpus=8)
    knobs = ServingKnobs(256, chunk, 1, 1)
    load = ServiceLoad(prompt_tokens=prompt, output_tokens=1)
    capacity = queues / (per_token(knobs, prompt, 0, 0) * 1e-9)
    checked = 0
    for rate in np.linspace(0.02, 1.1, 28) * capacity:
        m = predict_prefill_only(rep, knobs, load, rate)
        for p in (50, 90, 99):
            for ttft in (m.ttft_at(p) * f for f in (0.9, 0.999, 1.001, 1.1) if m.stable and math.isfinite(m.ttft_at(p))):
                slo = Slo(ttft, None, None, p)
                assert meets_prefill_slo(rep, knobs, load, rate, slo) == meets(m, slo, load), (rate, p, ttft)
                checked += 1
        slo = Slo(1.0, None, None, 90)
        assert meets_prefill_slo(rep, knobs, load, rate, slo) == meets(m, slo, load)
    assert checked > 150


def solved_plan(tmp_path: Path, source: str, gpus: int | None = None, rate: float | None = None
                ) -> tuple[dict, Path, dict]:
    """(instance document, plan path, plan metrics) of ``moeopt solve --mode disagg``."""
    doc = json.loads((REPO / "instances" / source).read_text())
    if gpus is not None:
        doc["hardware"]["num_gpus"] = gpus
    if rate is not None:
        doc["workload"]["arrival_rate_rps"] = rate
    inst, plan = tmp_path / "instance.json", tmp_path / "plan.json"
    inst.write_text(json.dumps(doc))
    result = CliRunner().invoke(main, ["solve", str(inst), "--mode", "disagg", "--output", str(plan)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(plan.read_text())["metrics"]
    assert metrics["utilization"] <= 0.85  # the targets are judged at utilisation <= 85 %
    return doc, plan, metrics


@pytest.mark.slow
def test_prefill_pool_agrees_with_the_simulator(tmp_path: Path):
    """Issue 14: p90 TTFT within 15 %, p90 TPOT within 5 % of the simulation on Qwen3-30B-A3B's
    solved disaggregated plan on 8 H200 at its 25 requests/s. TPOT: median of 3 seeds of 4,000
    requests, latencies of the steady middle half (bench_disagg_agreement); TTFT: median of 3
    seeds of a 12,000-request run of the prefill pool alone (the same TTFT per request as the
    full run, tests/simulate/test_disagg.py; its steady half is 240 s of arrivals)."""
    doc, plan, metrics = solved_plan(tmp_path, "qwen3_30b_a3b_h200_service.json")
    runs = simulate_at(doc, plan, metrics["rate_rps"], 4000, tmp_path)
    tpot = statistics.median(f["tpot_p90_ms"] for _, _, f in runs)
    alone = prefill_ttft_s(doc, plan, metrics["rate_rps"], 12_000, tmp_path)
    ttft = statistics.median(f["ttft_p90_s"] for f in alone)
    assert abs(metrics["ttft_p90_s"] / ttft - 1) <= 0.15, (metrics["ttft_p90_s"], ttft)
    assert abs(metrics["tpot_p90_ms"] / tpot - 1) <= 0.05, (metrics["tpot_p90_ms"], tpot)


@pytest.mark.slow
def test_deepseek_prefill_pool_agrees_with_the_simulator(tmp_path: Path):
    """Issue 14: p90 TTFT within 15 % on DeepSeek-V3 FP8's solved disaggregated plan on 16 H200
    at 11 requests/s (prefill 1 x 8 GPUs, 4 queues, C 8,192 holding two 4,000-token prompts:
    the regime where the law was 1.22x before the M/D/k waiting law and the prompts joining
    behind). Median of 3 seeds of a 20,000-request run of the prefill pool alone (900 s of
    steady arrivals: its p90 sits where rare 'every queue busy' episodes decide it)."""
    doc, plan, metrics = solved_plan(tmp_path, "deepseek_v3_fp8_h200_service.json", gpus=16, rate=11.0)
    alone = prefill_ttft_s(doc, plan, metrics["rate_rps"], 20_000, tmp_path)
    ttft = statistics.median(f["ttft_p90_s"] for f in alone)
    assert abs(metrics["ttft_p90_s"] / ttft - 1) <= 0.15, (metrics["ttft_p90_s"], ttft)
