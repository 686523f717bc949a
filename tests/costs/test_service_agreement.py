"""The serving model against the discrete-event simulator on a CI-sized case (the full table
over the shipped and 30 random services is ``benchmarks/bench_service_agreement.py``):
Qwen3-30B-A3B's shipped service at its own rate (77 % of the planned sustainable rate), read
in steady state, median over 3 seeds: p90 TTFT within 15 %, p90 TPOT within 5 %, and the
planned sustainable rate within 10 % of the simulated completion rate while offered 1.25x
it. (``tests/simulate/test_service_vs_simulator.py`` does 10b_moe_service.)"""

import json
from pathlib import Path

import pytest

from benchmarks.bench_service_agreement import TOLERANCE, Case, compare

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_qwen3_service_agrees_with_the_simulator(tmp_path):
    doc = json.loads((REPO / "instances" / "qwen3_30b_a3b_h200_service.json").read_text())
    rows = compare(Case("qwen3", doc, fractions=()), tmp_path, time_limit_s=120)
    at_rate, sustainable = rows[0], rows[-1]
    assert at_rate["rate_rps"] == 25.0 and at_rate["load"] <= 0.85
    assert at_rate["measured"] >= 500
    assert abs(at_rate["ttft_ratio"] - 1) <= TOLERANCE["ttft"]
    assert abs(at_rate["tpot_ratio"] - 1) <= TOLERANCE["tpot"]
    assert abs(sustainable["sustainable_ratio"] - 1) <= TOLERANCE["sustainable"]
