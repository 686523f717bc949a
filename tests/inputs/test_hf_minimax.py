"""MiniMax-M2.5 from its config.json: the per-layer q/k norm (``use_qk_norm``,
``qk_norm_type: per_layer``), the routing bias (``use_routing_bias``) and the FP8 checkpoint's
``modules_to_not_convert`` (router, score-correction bias and LM head in bf16) are all counted.
Expected figures by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimizer.costs import formulas as cm
from optimizer.errors import InputError
from optimizer.inputs.hf import model_from_hf_config
from optimizer.inputs.schema import ModelSpec

CONFIG = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "hf" / "minimax_m2_5.json").read_text())


def _spec(config: dict = CONFIG) -> ModelSpec:
    return ModelSpec.model_validate(model_from_hf_config(config))


def test_fields():
    m = _spec()
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.num_kv_heads, m.head_dim) == (62, 3072, 48, 8, 128)
    assert (m.num_experts, m.top_k, m.expert_ffn_size, m.shared_expert_ffn_size) == (256, 8, 1536, 0)
    assert (m.qk_norm, m.router_bias, m.weight_dtype, m.tie_word_embeddings) == ("full", True, "fp8", False)


def test_total_parameters_by_hand():
    # attention: Q 3072*6144 + K,V 2*3072*1024 + O 6144*3072 = 44,040,192
    #   + per-layer q/k norm over all heads (48 + 8) * 128 = 7,168          -> 44,047,360
    # norms 2 * 3072 = 6,144; experts 256 * 3*3072*1536 = 3,623,878,656
    # router 3072*256 + routing bias 256 = 786,688
    # layer 3,668,718,848; x 62 = 227,460,568,576
    # embedding + untied head 2 * 200,064 * 3072 = 1,229,193,216; final norm 3,072
    assert cm.total_params(_spec()) == 228_689_764_864
    # what the import missed before: 62 * (7,168 + 256) = 460,288 (the shortfall to the
    # published count the issue names): a per-head norm (2 * 128) and no bias instead
    old = model_from_hf_config(CONFIG)
    old.update(qk_norm="per_head", router_bias=False)
    assert cm.total_params(_spec()) - cm.total_params(ModelSpec.model_validate(old)) == 62 * (7_168 + 256 - 256)
    old.update(qk_norm="none")
    assert cm.total_params(_spec()) - cm.total_params(ModelSpec.model_validate(old)) == 460_288


def test_fp8_weight_bytes_keep_router_head_and_embedding_in_bf16():
    # FP8 (1 B): attention matrices 44,040,192 and experts 3,623,878,656 per layer
    #   -> 62 * 3,667,918,848 = 227,410,968,576 B
    # bf16 (2 B): per layer q/k norm 7,168 + norms 6,144 + router and bias 786,688 = 800,000
    #   -> 62 * 800,000 * 2 = 99,200,000 B; embedding, head, final norm 1,229,196,288 * 2
    #   = 2,458,392,576 B
    assert cm.weight_bytes(_spec()) == 227_410_968_576 + 99_200_000 + 2_458_392_576


def test_per_head_qk_norm_and_no_bias_variants():
    m = _spec({**CONFIG, "qk_norm_type": "per_head", "use_routing_bias": False})
    assert (m.qk_norm, m.router_bias) == ("per_head", False)
    assert _spec({**CONFIG, "use_qk_norm": False}).qk_norm == "none"


@pytest.mark.parametrize("edit, field", [
    ({"qk_norm_type": "per_token"}, "qk_norm_type"),
    ({"shared_intermediate_size": 512}, "shared_intermediate_size"),
    ({"quantization_config": {**CONFIG["quantization_config"], "modules_to_not_convert": ["self_attn.q_proj"]}},
     "modules_to_not_convert"),
    ({"quantization_config": {**CONFIG["quantization_config"], "modules_to_not_convert": "lm_head"}},
     "modules_to_not_convert"),
])
def test_bad_fields_are_named(edit, field):
    with pytest.raises(InputError, match=field):
        model_from_hf_config({**CONFIG, **edit})
