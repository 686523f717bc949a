"""Regenerate the real-model instances of this directory with ``moeopt init``'s own code.

    python instances/make_instances.py            # (re)write the five instances
    python instances/make_instances.py --check    # exit 1 if a file differs from what this makes
    python instances/make_instances.py --fixtures tests/fixtures/hf   # write the config.json files

The HuggingFace ``config.json`` dicts below are the published files of the four models
(fields as read from the repositories named above each); ``tests/fixtures/hf/`` holds the same
dicts as JSON and ``tests/cpsat/test_model_instances.py`` checks that the two agree and that this
script reproduces the committed instances byte for byte. Why each instance exists, and what
it should show, is in ``instances/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from optimizer.cli.common import dump
from optimizer.cli.init_instance import build_instance
from optimizer.inputs.files import write_atomic
from optimizer.inputs.hf import model_from_hf_config

HERE = Path(__file__).resolve().parent

# deepseek-ai/DeepSeek-V3/config.json
DEEPSEEK_V3 = {'_name_or_path': 'deepseek-ai/DeepSeek-V3',
 'architectures': ['DeepseekV3ForCausalLM'],
 'attention_bias': False,
 'attention_dropout': 0.0,
 'aux_loss_alpha': 0.001,
 'bos_token_id': 0,
 'eos_token_id': 1,
 'ep_size': 1,
 'first_k_dense_replace': 3,
 'hidden_act': 'silu',
 'hidden_size': 7168,
 'initializer_range': 0.02,
 'intermediate_size': 18432,
 'kv_lora_rank': 512,
 'max_position_embeddings': 163840,
 'model_type': 'deepseek_v3',
 'moe_intermediate_size': 2048,
 'moe_layer_freq': 1,
 'n_group': 8,
 'n_routed_experts': 256,
 'n_shared_experts': 1,
 'norm_topk_prob': True,
 'num_attention_heads': 128,
 'num_experts_per_tok': 8,
 'num_hidden_layers': 61,
 'num_key_value_heads': 128,
 'num_nextn_predict_layers': 1,
 'q_lora_rank': 1536,
 'qk_nope_head_dim': 128,
 'qk_rope_head_dim': 64,
 'quantization_config': {'activation_scheme': 'dynamic',
                         'fmt': 'e4m3',
                         'quant_method': 'fp8',
                         'weight_block_size': [128, 128]},
 'rms_norm_eps': 1e-06,
 'rope_scaling': {'beta_fast': 32,
                  'beta_slow': 1,
                  'factor': 40,
                  'mscale': 1.0,
                  'mscale_all_dim': 1.0,
                  'original_max_position_embeddings': 4096,
                  'type': 'yarn'},
 'rope_theta': 10000,
 'routed_scaling_factor': 2.5,
 'scoring_func': 'sigmoid',
 'seq_aux': True,
 'tie_word_embeddings': False,
 'topk_group': 4,
 'topk_method': 'noaux_tc',
 'torch_dtype': 'bfloat16',
 'transformers_version': '4.33.1',
 'use_cache': True,
 'v_head_dim': 128,
 'vocab_size': 129280}


# deepseek-ai/DeepSeek-V2-Lite/config.json
DEEPSEEK_V2_LITE = {'_name_or_path': 'deepseek-ai/DeepSeek-V2-Lite',
 'architectures': ['DeepseekV2ForCausalLM'],
 'attention_bias': False,
 'attention_dropout': 0.0,
 'aux_loss_alpha': 0.001,
 'bos_token_id': 100000,
 'eos_token_id': 100001,
 'first_k_dense_replace': 1,
 'hidden_act': 'silu',
 'hidden_size': 2048,
 'initializer_range': 0.02,
 'intermediate_size': 10944,
 'kv_lora_rank': 512,
 'max_position_embeddings': 163840,
 'model_type': 'deepseek_v2',
 'moe_intermediate_size': 1408,
 'moe_layer_freq': 1,
 'n_group': 1,
 'n_routed_experts': 64,
 'n_shared_experts': 2,
 'norm_topk_prob': False,
 'num_attention_heads': 16,
 'num_experts_per_tok': 6,
 'num_hidden_layers': 27,
 'num_key_value_heads': 16,
 'pretraining_tp': 1,
 'q_lora_rank': None,
 'qk_nope_head_dim': 128,
 'qk_rope_head_dim': 64,
 'rms_norm_eps': 1e-06,
 'rope_scaling': {'beta_fast': 32,
                  'beta_slow': 1,
                  'factor': 40,
                  'mscale': 0.707,
                  'mscale_all_dim': 0.707,
                  'original_max_position_embeddings': 4096,
                  'type': 'yarn'},
 'rope_theta': 10000,
 'routed_scaling_factor': 1.0,
 'scoring_func': 'softmax',
 'seq_aux': True,
 'tie_word_embeddings': False,
 'topk_group': 1,
 'topk_method': 'greedy',
 'torch_dtype': 'bfloat16',
 'transformers_version': '4.33.1',
 'use_cache': True,
 'v_head_dim': 128,
 'vocab_size': 102400}


# mistralai/Mixtral-8x7B-v0.1/config.json
MIXTRAL_8X7B = {'_name_or_path': 'mistralai/Mixtral-8x7B-v0.1',
 'architectures': ['MixtralForCausalLM'],
 'attention_dropout': 0.0,
 'bos_token_id': 1,
 'eos_token_id': 2,
 'hidden_act': 'silu',
 'hidden_size': 4096,
 'initializer_range': 0.02,
 'intermediate_size': 14336,
 'max_position_embeddings': 32768,
 'model_type': 'mixtral',
 'num_attention_heads': 32,
 'num_experts_per_tok': 2,
 'num_hidden_layers': 32,
 'num_key_value_heads': 8,
 'num_local_experts': 8,
 'output_router_logits': False,
 'rms_norm_eps': 1e-05,
 'rope_theta': 1000000.0,
 'router_aux_loss_coef': 0.02,
 'sliding_window': None,
 'tie_word_embeddings': False,
 'torch_dtype': 'bfloat16',
 'transformers_version': '4.36.0.dev0',
 'use_cache': True,
 'vocab_size': 32000}


# Qwen/Qwen3-30B-A3B/config.json
QWEN3_30B_A3B = {'_name_or_path': 'Qwen/Qwen3-30B-A3B',
 'architectures': ['Qwen3MoeForCausalLM'],
 'attention_bias': False,
 'attention_dropout': 0.0,
 'bos_token_id': 151643,
 'decoder_sparse_step': 1,
 'eos_token_id': 151645,
 'head_dim': 128,
 'hidden_act': 'silu',
 'hidden_size': 2048,
 'initializer_range': 0.02,
 'intermediate_size': 6144,
 'max_position_embeddings': 40960,
 'max_window_layers': 48,
 'mlp_only_layers': [],
 'model_type': 'qwen3_moe',
 'moe_intermediate_size': 768,
 'norm_topk_prob': True,
 'num_attention_heads': 32,
 'num_experts': 128,
 'num_experts_per_tok': 8,
 'num_hidden_layers': 48,
 'num_key_value_heads': 4,
 'output_router_logits': False,
 'rms_norm_eps': 1e-06,
 'rope_scaling': None,
 'rope_theta': 1000000.0,
 'router_aux_loss_coef': 0.001,
 'sliding_window': None,
 'tie_word_embeddings': False,
 'torch_dtype': 'bfloat16',
 'transformers_version': '4.51.0',
 'use_cache': True,
 'use_sliding_window': False,
 'vocab_size': 151936}


CONFIGS = {"deepseek_v3": DEEPSEEK_V3, "deepseek_v2_lite": DEEPSEEK_V2_LITE,
           "mixtral_8x7b": MIXTRAL_8X7B, "qwen3_30b_a3b": QWEN3_30B_A3B}

# name: (config, weight dtype (None = the checkpoint's), KV dtype, GPU preset, GPUs, workload and
# requirements). Every workload: 4,000 prompt + 1,000 generated tokens per sequence.
INSTANCES: dict[str, dict] = {
    # native FP8 checkpoint, FP8 KV; one node of 8 x H200 holds the 671 GB (SGLang --tp 8)
    "deepseek_v3_fp8_h200": dict(config="deepseek_v3", weight_dtype="fp8", kv_dtype="fp8",
                                 gpu="h200-sxm", gpus=8, batch=64, max_ttft_s=10.0, max_tpot_ms=50.0),
    # the same on H100: 8 x 80 GB cannot hold the weights, 2 nodes (16) can (SGLang --tp 16)
    "deepseek_v3_fp8_h100": dict(config="deepseek_v3", weight_dtype="fp8", kv_dtype="fp8",
                                 gpu="h100-sxm", gpus=16, batch=64, max_ttft_s=10.0, max_tpot_ms=50.0),
    # 93.4 GB of BF16 weights: more than one 80 GB GPU, one node to choose EP/TP from
    "mixtral_8x7b_bf16_h100": dict(config="mixtral_8x7b", weight_dtype="bf16", kv_dtype=None,
                                   gpu="h100-sxm", gpus=8, batch=32, max_ttft_s=10.0, max_tpot_ms=50.0),
    # 61 GB of BF16 weights fit one H200; 128 small experts over a node, with a throughput target
    # (35 tokens/ms: the H200 hardware profile's measured kernel efficiencies cap this batch at
    # 39.9; the flat 50 %/80 % model allowed 42.6)
    "qwen3_30b_a3b_h200": dict(config="qwen3_30b_a3b", weight_dtype="bf16", kv_dtype=None,
                               gpu="h200-sxm", gpus=8, batch=64, max_ttft_s=5.0, max_tpot_ms=20.0,
                               min_throughput_tokens_per_ms=35.0),
    # 31.4 GB of BF16 weights: one GPU (TPOT <= 60 ms: with the A100 hardware profile's
    # measured MLA decode, at 17 % of its speed of light, the best plan takes about 52 ms)
    "deepseek_v2_lite_bf16_a100": dict(config="deepseek_v2_lite", weight_dtype="bf16", kv_dtype=None,
                                       gpu="a100-80gb", gpus=1, batch=32, max_ttft_s=15.0,
                                       max_tpot_ms=60.0),
}
PROMPT_TOKENS, OUTPUT_TOKENS = 4000, 1000


def make(name: str) -> str:
    """The instance file's text, exactly as ``moeopt init`` would write it."""
    spec = dict(INSTANCES[name])
    config = CONFIGS[spec.pop("config")]
    model = model_from_hf_config(config, weight_dtype=spec.pop("weight_dtype"),
                                 source=f"{config['_name_or_path']}/config.json")
    doc = build_instance(model, name=name, prompt_tokens=PROMPT_TOKENS,
                         output_tokens=OUTPUT_TOKENS, **spec)
    return dump(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare, do not write")
    ap.add_argument("--fixtures", metavar="DIR", help="also write the config.json dicts to DIR")
    args = ap.parse_args(argv)
    stale = []
    for name in INSTANCES:
        path = HERE / f"{name}.json"
        text = make(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            write_atomic(path, text)
            print(f"wrote {path}")
    if args.fixtures:
        for key, config in CONFIGS.items():
            target = Path(args.fixtures) / f"{key}.json"
            write_atomic(target, json.dumps(config, indent=2) + "\n")
            print(f"wrote {target}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python instances/make_instances.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
