"""The serving model's request sizes (``replica.service_load``) against the closed forms of
the workload's length distributions."""

import math

import pytest

from optimizer.costs.serving.replica import service_load
from optimizer.inputs.schema import ServiceWorkload


def _load(prompt):
    return service_load(ServiceWorkload(kind="service", arrival_rate_rps=1.0, prompt_tokens=prompt, output_tokens=100))


def test_fixed_prompts_have_no_percentiles():
    load = _load(2000)
    assert (load.prompt_tokens, load.prompt_cv2, load.prompt_percentile_tokens) == (2000, 0.0, ())
    assert load.prompt_at(90) == 2000
    assert load.prompt_points == () and list(load.prompt_lengths()) == [2000.0]


def test_uniform_prompt_percentiles():
    # uniform on 1000..3000: the p-th percentile is 1000 + 2000 p (100,000 draws: a few
    # tokens of sampling error), cv^2 = (2001^2 - 1) / 12 / 2000^2 = 0.0834
    load = _load({"kind": "uniform", "min_tokens": 1000, "max_tokens": 3000})
    assert load.prompt_tokens == pytest.approx(2000, abs=10)
    assert load.prompt_cv2 == pytest.approx(0.0834, abs=0.002)
    assert load.prompt_percentile_tokens == pytest.approx((2000, 2800, 2980), abs=15)
    assert load.prompt_at(99) == load.prompt_percentile_tokens[2]
    # 32 equally likely prompt lengths: the quantiles at (i + 1/2) / 32, 1000 + 2000 (i + 1/2) / 32
    want = [1000 + 2000 * (i + 0.5) / 32 for i in range(32)]
    assert load.prompt_points == pytest.approx(want, abs=15)


def test_exponential_prompt_percentiles_are_clipped():
    # exponential of mean 1000 clipped to 1..4000: p50 = 1000 ln 2 = 693, p90 = 1000 ln 10 =
    # 2303; P(X > 4000) = e^-4 = 1.8 % > 1 %, so p99 is the clip, 4000 exactly
    load = _load({"kind": "exponential", "mean_tokens": 1000, "min_tokens": 1, "max_tokens": 4000})
    p50, p90, p99 = load.prompt_percentile_tokens
    assert p50 == pytest.approx(1000 * math.log(2), rel=0.03)
    assert p90 == pytest.approx(1000 * math.log(10), rel=0.03)
    assert p99 == 4000


def test_prompt_points_are_equally_likely_quantiles():
    # uniform on 1000..3000: the point i is the quantile at (i + 1/2) / 32, 1000 + 2000 (i +
    # 1/2) / 32 (a few tokens of sampling error); a fixed length has none (one point: s)
    load = _load({"kind": "uniform", "min_tokens": 1000, "max_tokens": 3000})
    assert len(load.prompt_points) == 32
    assert load.prompt_points == pytest.approx([1000 + 2000 * (i + 0.5) / 32 for i in range(32)], abs=15)
    assert _load(2000).prompt_points == ()
