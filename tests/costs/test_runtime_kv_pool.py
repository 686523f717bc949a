"""KV-cache pool per GPU as vLLM, SGLang and TensorRT-LLM size it from their memory fraction
(formulas.runtime_kv_pool_bytes). Hand figures: an H200 (141 GiB = 151,397,597,184 B), 84 GB
of weights, 6 GB of peak activations, 4.158 GB reserve."""

from __future__ import annotations

import pytest

from optimizer.costs import formulas as cm

CAP, W, ACT, RES = 151_397_597_184, 84e9, 6e9, 4.158e9


def test_vllm_subtracts_everything_from_its_share():
    # 0.9 * 151,397,597,184 = 136,257,837,465.6; - 84e9 - 6e9 - 4.158e9 = 42,099,837,465.6
    assert cm.runtime_kv_pool_bytes("vllm", CAP, W, ACT, RES) == pytest.approx(42_099_837_465.6)


def test_sglang_static_fraction_holds_weights_and_kv_only():
    # 0.88 * 151,397,597,184 = 133,229,885,521.92; - 84e9 = 49,229,885,521.92
    assert cm.runtime_kv_pool_bytes("sglang", CAP, W, ACT, RES) == pytest.approx(49_229_885_521.92)
    assert cm.runtime_kv_pool_bytes("sglang", CAP, W, ACT, RES, 0.8) == pytest.approx(0.8 * CAP - W)


def test_trtllm_takes_a_fraction_of_what_is_free():
    # free = 151,397,597,184 - 84e9 - 6e9 - 4.158e9 = 57,239,597,184; x 0.9 = 51,515,637,465.6
    assert cm.runtime_kv_pool_bytes("trtllm", CAP, W, ACT, RES) == pytest.approx(51_515_637_465.6)


def test_never_negative_and_unknown_runtime_refused():
    assert cm.runtime_kv_pool_bytes("sglang", CAP, 2 * CAP, ACT, RES) == 0.0
    with pytest.raises(ValueError, match="runtime 'tgi'"):
        cm.runtime_kv_pool_bytes("tgi", CAP, W, ACT, RES)
