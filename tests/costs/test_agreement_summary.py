"""benchmarks/bench_service_agreement.py's counts and the referee's spread, on rows written by
hand (the counts are the README's table: a wrong count would misstate the agreement)."""

from __future__ import annotations

import math

import pytest

from benchmarks.bench_service_agreement import _spread, referee_spread, summary


def _row(load: float, ttft_ratio: float, tpot_ratio: float, ttft_spread: float = 0.0,
         tpot_spread: float = 0.0) -> dict:
    return {"ttft_ratio": ttft_ratio, "tpot_ratio": tpot_ratio, "load_drawn": load,
            "ttft_seed_spread": ttft_spread, "tpot_seed_spread": tpot_spread}


def test_spread_of_the_seeds():
    # 10.5 / 10.0 - 1 = 0.05 whatever the order; a zero reading has no ratio
    assert _spread([10.0, 10.5, 10.2]) == pytest.approx(0.05)
    assert _spread([10.5, 10.0, 10.2]) == pytest.approx(0.05)
    assert math.isnan(_spread([0.0, 1.0, 2.0]))


def test_counts_take_only_rows_at_or_below_85_percent():
    rows = [_row(0.30, 1.10, 1.04),  # both inside (+-15 %, +-5 %)
            _row(0.60, 0.84, 0.949),  # both just outside
            _row(0.85, 1.149, 0.951),  # at 85 %, just inside
            _row(0.90, 2.00, 2.00),  # above 85 %: not counted
            {"sustainable_ratio": 1.09, "sustainable_ratio_second_half": 1.2}]
    counts = summary(rows)
    assert counts["ttft"] == (2, 3) and counts["tpot"] == (2, 3)
    assert counts["sustainable"] == (1, 1) and counts["sustainable, second-half measure"] == (0, 1)


def test_referee_spread_median_and_90th_percentile():
    # TTFT spreads 0.01, 0.02, 0.03, 0.10 over the rows at <= 85 %: median (0.02 + 0.03) / 2
    # = 0.025, 90th percentile (linear) 0.03 + 0.7 x (0.10 - 0.03) = 0.079; the row at 95 %
    # (spread 0.50) is left out; a NaN spread (no TPOT) is skipped
    rows = [_row(0.2, 1, 1, 0.01, 0.04), _row(0.4, 1, 1, 0.02, math.nan), _row(0.6, 1, 1, 0.03, 0.06),
            _row(0.8, 1, 1, 0.10, 0.08), _row(0.95, 1, 1, 0.50, 0.50)]
    spread = referee_spread(rows)
    assert spread["ttft"] == pytest.approx((0.025, 0.079))
    # TPOT 0.04, 0.06, 0.08: median 0.06, 90th percentile 0.06 + 0.8 x 0.02 = 0.076
    assert spread["tpot"] == pytest.approx((0.06, 0.076))
