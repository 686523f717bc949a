"""FP8 checkpoints keep the embedding, LM head, router and norms in bf16 (formulas.
unquantized_dtype): the per-GPU memory parts count them at 2 bytes. Hand figures for
DeepSeek-V3 (h 7168, V 129,280, E 256, 61 layers of which 58 MoE) at TP 1."""

from __future__ import annotations

import json
from pathlib import Path

from optimizer.costs import formulas as cm
from optimizer.costs import tables
from optimizer.costs.layout import Degrees
from optimizer.inputs.hf import model_from_hf_config
from optimizer.inputs.schema import Instance

CONFIG = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "hf" / "deepseek_v3.json").read_text())


def _inst(weight_dtype: str | None) -> Instance:
    model = model_from_hf_config(CONFIG, name="dsv3", weight_dtype=weight_dtype)
    return Instance.model_validate({"name": "x", "model": model, "hardware": {"preset": "h200-sxm", "num_gpus": 8},
                                    "workload": {"batch_sequences": 8, "prompt_tokens": 1000, "output_tokens": 0}})


def test_fp8_embedding_head_router_and_norms_are_bf16():
    inst = _inst(None)
    m = inst.model
    assert m.weight_dtype == "fp8" and cm.unquantized_dtype(m) == "bf16"
    deg = Degrees(tp=1, pp=1, dp=8, ep=8, etp=1, edp=1, micro_batches=1)
    parts = tables.memory_parts(inst, deg, 8000, [0.0] * m.num_layers)
    # embedding 129,280 * 7,168 = 926,679,040 parameters at 2 B
    assert parts.embedding == 1_853_358_080
    # untied head the same + final norm 7,168 at 2 B
    assert parts.head == 1_853_358_080 + 14_336
    # an MoE layer: attention matrices in FP8 (1 B), its norms (q_a 1,536 + kv_a 512) and the
    # two layer norms (2 * 7,168) at 2 B, router 7,168 * 256 + bias 256 at 2 B, shared
    # expert 3 * 7,168 * 2,048 at 1 B, 32 routed experts of 3 * 7,168 * 2,048 at 1 B
    attn = cm.attention_matrix_params(m)
    expected = (attn + (1_536 + 512) * 2 + 2 * 7_168 * 2 + (7_168 * 256 + 256) * 2
                + 3 * 7_168 * 2_048 + 32 * 3 * 7_168 * 2_048)
    assert parts.layer_weights[3] == expected


def test_bf16_weights_unchanged():
    inst = _inst("bf16")
    assert cm.unquantized_dtype(inst.model) == "bf16"
    deg = Degrees(tp=1, pp=1, dp=8, ep=8, etp=1, edp=1, micro_batches=1)
    parts = tables.memory_parts(inst, deg, 8000, [0.0] * inst.model.num_layers)
    assert parts.layer_weights[3] == 2 * (cm.layer_params(inst.model, 3)
                                          - 256 * cm.expert_params(inst.model)) + 2 * 32 * cm.expert_params(inst.model)
