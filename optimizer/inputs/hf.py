"""HuggingFace ``config.json`` -> a moeopt model section (``ModelSpec`` fields). Local files only:
nothing is downloaded, ever.

Families (dispatch on ``architectures[0]``, then ``model_type``; anything else falls back to
generic field names): Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek (V1 GQA, V2/V3 MLA), OLMoE,
GPT-OSS, DBRX, Phi-3.5-MoE, Llama-4 (``text_config``). Every field read is named in the
error when it is missing or has the wrong type (``InputError``, exit 2).

Counting conventions (docs/models.md): gated FFNs (3 matrices) for every family
here; DeepSeek-V3's multi-token-prediction module and Llama-4's vision encoder are not part
of the deployed decoder and are reported apart by ``hf_extra_params``.

Weight types: ``torch_dtype`` (or ``dtype``) gives the weights and the KV cache;
``quantization_config.quant_method`` "fp8" makes every weight FP8 (DeepSeek-V3's native
checkpoint), "mxfp4" makes the routed experts MXFP4 (GPT-OSS). An explicit ``weight_dtype``
argument replaces both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from optimizer.errors import InputError
from optimizer.inputs.files import read_json, validation_message
from optimizer.inputs.schema import DTYPE_BYTES, MAX_EXPERTS, MAX_HEADS, MAX_LAYERS, ModelSpec

TORCH_DTYPES: dict[str, str] = {
    "bfloat16": "bf16", "bf16": "bf16",
    "float16": "fp16", "fp16": "fp16", "half": "fp16",
    "float32": "fp32", "fp32": "fp32", "float": "fp32",
    "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "fp8": "fp8",
}
DEFAULT_DTYPE = "bf16"  # when a config names no dtype (GPT-OSS's config.json has none)

WEIGHT_DTYPES = ("bf16", "fp16", "fp8", "mxfp4")

# Fields whose value sizes a list built here (one entry per layer) or a table downstream,
# capped when read, before anything is built: the schema's caps under every HF spelling.
HF_INT_CAPS: dict[str, int] = {
    **dict.fromkeys(("num_hidden_layers", "n_layers", "n_layer", "num_layers"), MAX_LAYERS),
    **dict.fromkeys(("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"),
                    MAX_EXPERTS),
    **dict.fromkeys(("num_attention_heads", "n_heads", "n_head", "num_heads", "num_key_value_heads",
                     "num_kv_heads", "kv_n_heads"), MAX_HEADS),
}


class Cfg:
    """A config dict with typed, named accessors; ``prefix`` is its path in the file."""

    def __init__(self, data: dict, source: str, family: str, prefix: str = ""):
        self.data, self.source, self.family, self.prefix = data, source, family, prefix

    def sub(self, key: str) -> Cfg:
        value = self.data.get(key)
        if not isinstance(value, dict):
            self._bad(key, value, "is missing" if value is None else "must be a JSON object")
        return Cfg(value, self.source, self.family, f"{self.prefix}{key}.")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _bad(self, key: str, value: Any, rule: str):
        shown = "" if value is None and rule == "is missing" else f"={value!r}"
        raise InputError(f"{self.source}: {self.prefix}{key}{shown}: {rule} "
                         f"({self.family} needs it)")

    def int(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        """An integer field; ``None`` in the file counts as missing."""
        value = self.data.get(key)
        if value is None:
            if default is None:
                self._bad(key, None, "is missing")
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._bad(key, value, "must be an integer")
        if value < minimum:
            self._bad(key, value, f"must be >= {minimum}")
        cap = HF_INT_CAPS.get(key)
        if cap is not None and value > cap:
            self._bad(key, value, f"must be <= {cap}, moeopt's cap")
        return value

    def first_int(self, keys: tuple[str, ...], default: int | None = None, *, minimum: int = 1) -> int:
        """The first of ``keys`` present (aliases across families)."""
        for key in keys:
            if self.has(key):
                return self.int(key, minimum=minimum)
        if default is None:
            raise InputError(f"{self.source}: {self.prefix}{keys[0]} is missing (also looked for "
                             f"{', '.join(self.prefix + k for k in keys[1:])}; {self.family} needs it)")
        return default

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self._bad(key, value, "must be true or false")
        return value

    def str(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self._bad(key, value, "must be a string")
        return value

    def int_list(self, key: str) -> list[int] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            self._bad(key, value if not isinstance(value, list) else "[...]", "must be a list of integers")
        return value


# ---------------------------------------------------------------- shared pieces
def _attention_shape(c: Cfg, hidden: int) -> dict:
    """Heads, KV heads and head size of MHA/GQA (``head_dim`` or hidden / heads)."""
    n_h = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads", n_h)
    if c.has("head_dim"):
        d_h = c.int("head_dim")
    elif hidden % n_h:
        raise InputError(f"{c.source}: {c.prefix}head_dim is missing and hidden_size={hidden} is not "
                         f"a multiple of num_attention_heads={n_h}")
    else:
        d_h = hidden // n_h
    return {"num_attention_heads": n_h, "num_kv_heads": n_kv, "head_dim": d_h}


def _every_layer_sliding(c: Cfg, num_layers: int) -> dict:
    """Mistral-style ``sliding_window`` on every layer; a window at least as long as the
    longest context (Phi-3.5-MoE, Qwen2 with it switched off) is no window."""
    window = c.data.get("sliding_window")
    if window is None or c.data.get("use_sliding_window") is False:
        return {}
    window = c.int("sliding_window")
    max_pos = c.data.get("max_position_embeddings")
    if isinstance(max_pos, int) and window >= max_pos:
        return {}
    return {"sliding_window": window, "layer_types": ["sliding"] * num_layers}


HF_LAYER_TYPES = {"full_attention": "full", "sliding_attention": "sliding", "full": "full",
                  "sliding": "sliding"}


def _layer_types(c: Cfg, num_layers: int) -> dict | None:
    """HF's explicit ``layer_types`` list (GPT-OSS, newer Qwen2/3), or None when absent."""
    types = c.data.get("layer_types")
    if types is None:
        return None
    if not isinstance(types, list) or len(types) != num_layers:
        c._bad("layer_types", "[...]", f"must be a list of {num_layers} entries (num_hidden_layers)")
    out = []
    for i, t in enumerate(types):
        if not isinstance(t, str) or t not in HF_LAYER_TYPES:
            raise InputError(f"{c.source}: {c.prefix}layer_types[{i}]={t!r}: unknown attention kind "
                             f"(known: {', '.join(HF_LAYER_TYPES)})")
        out.append(HF_LAYER_TYPES[t])
    if "sliding" not in out:
        return {}
    return {"sliding_window": c.int("sliding_window"), "layer_types": out}


def _explicit_or_every_layer(c: Cfg, num_layers: int) -> dict:
    """``layer_types`` when the config has it (an all-full list means no window), else a
    Mistral-style window on every layer."""
    explicit = _layer_types(c, num_layers)
    return explicit if explicit is not None else _every_layer_sliding(c, num_layers)


def _qwen_sliding(c: Cfg, num_layers: int) -> dict:
    """Qwen2/3: explicit layer_types, else layers >= max_window_layers slide when
    use_sliding_window is on."""
    explicit = _layer_types(c, num_layers)
    if explicit is not None:
        return explicit
    if not c.bool("use_sliding_window", False) or not c.has("sliding_window"):
        return {}
    first = c.int("max_window_layers", num_layers, minimum=0)
    types = ["sliding" if i >= first else "full" for i in range(num_layers)]
    if "sliding" not in types:
        return {}
    return {"sliding_window": c.int("sliding_window"), "layer_types": types}


def _moe_layers_field(moe: list[int], num_layers: int) -> list[int] | None:
    """None when every layer is MoE (the schema's default), else the sorted indices."""
    moe = sorted(set(moe))
    return None if moe == list(range(num_layers)) else moe


def _dense_size(c: Cfg, moe_layers: list[int] | None, key: str) -> int:
    """The dense FFN size, needed (and read) only when some layer is dense."""
    return 0 if moe_layers is None else c.int(key)


# ---------------------------------------------------------------- families
def _mixtral(c: Cfg) -> dict:
    h, L = c.int("hidden_size"), c.int("num_hidden_layers")
    return {"num_layers": L, "hidden_size": h, **_attention_shape(c, h),
            "num_experts": c.int("num_local_experts"), "top_k": c.int("num_experts_per_tok"),
            "expert_ffn_size": c.int("intermediate_size"), "ffn_matrices": 3,
            "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
            **_every_layer_sliding(c, L)}


def _qwen_moe_layers(c: Cfg, L: int) -> list[int] | None:
    """Qwen2/3-MoE: layer i is sparse iff i not in mlp_only_layers and (i+1) % step == 0."""
    step = c.int("decoder_sparse_step", 1)
    dense_only = set(c.int_list("mlp_only_layers") or [])
    return _moe_layers_field([i for i in range(L) if i not in dense_only and (i + 1) % step == 0], L)


def _qwen2_moe(c: Cfg) -> dict:
    h, L = c.int("hidden_size"), c.int("num_hidden_layers")
    moe = _qwen_moe_layers(c, L)
    shared = c.int("shared_expert_intermediate_size", 0, minimum=0)
    return {"num_layers": L, "hidden_size": h, **_attention_shape(c, h),
            "num_experts": c.int("num_experts"), "top_k": c.int("num_experts_per_tok"),
            "expert_ffn_size": c.int("moe_intermediate_size"), "ffn_matrices": 3,
            "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
            "moe_layers": moe, "dense_ffn_size": _dense_size(c, moe, "intermediate_size"),
            # one shared expert of shared_expert_intermediate_size behind a sigmoid gate (h -> 1)
            "shared_expert_ffn_size": shared, "shared_expert_gate": shared > 0,
            # Qwen2 attention: q, k, v biases (``qkv_bias``, default true), none on o
            "qkv_bias": c.bool("qkv_bias", True), **_qwen_sliding(c, L)}


def _qwen3_moe(c: Cfg) -> dict:
    h, L = c.int("hidden_size"), c.int("num_hidden_layers")
    moe = _qwen_moe_layers(c, L)
    bias = c.bool("attention_bias", False)
    return {"num_layers": L, "hidden_size": h, **_attention_shape(c, h),
            "num_experts": c.int("num_experts"), "top_k": c.int("num_experts_per_tok"),
            "expert_ffn_size": c.int("moe_intermediate_size"), "ffn_matrices": 3,
            "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
            "moe_layers": moe, "dense_ffn_size": _dense_size(c, moe, "intermediate_size"),
            "qkv_bias": bias, "o_bias": bias,
            "qk_norm": "per_head",  # q_norm, k_norm = RMSNorm(head_dim)
            **_qwen_sliding(c, L)}


def _deepseek(c: Cfg) -> dict:
    """DeepSeek V1 (GQA), V2 and V3 (MLA): shared experts, first dense layers."""
    h, L = c.int("hidden_size"), c.int("num_hidden_layers")
    first_dense = c.int("first_k_dense_replace", 0, minimum=0)
    freq = c.int("moe_layer_freq", 1)
    moe = _moe_layers_field([i for i in range(L) if i >= first_dense and i % freq == 0], L)
    f = c.int("moe_intermediate_size")
    bias = c.bool("attention_bias", False)
    out = {"num_layers": L, "hidden_size": h,
           "num_experts": c.int("n_routed_experts"), "top_k": c.int("num_experts_per_tok"),
           "expert_ffn_size": f, "ffn_matrices": 3,
           "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
           "moe_layers": moe, "dense_ffn_size": _dense_size(c, moe, "intermediate_size"),
           "shared_expert_ffn_size": c.int("n_shared_experts", 0, minimum=0) * f,
           # V3: sigmoid scores + e_score_correction_bias (E per layer) with topk_method noaux_tc
           "router_bias": c.str("topk_method", "") == "noaux_tc",
           "qkv_bias": bias, "o_bias": bias}
    if c.has("kv_lora_rank"):
        n_h = c.int("num_attention_heads")
        out.update({"attention": "mla", "num_attention_heads": n_h, "num_kv_heads": n_h,
                    "head_dim": c.int("v_head_dim"),
                    "q_lora_rank": c.int("q_lora_rank", 0, minimum=0),
                    "kv_lora_rank": c.int("kv_lora_rank"),
                    "qk_rope_head_dim": c.int("qk_rope_head_dim"),
                    "qk_nope_head_dim": c.int("qk_nope_head_dim")})
    else:
        out.update(_attention_shape(c, h))
    return out


def _olmoe(c: Cfg) -> dict:
    h, L = c.int("hidden_size"), c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    return {"num_layers": L, "hidden_size": h, **_attention_shape(c, h),
            "num_experts": c.int("num_experts"), "top_k": c.int("num_experts_per_tok"),
            "expert_ffn_size": c.int("intermediate_size"), "ffn_matrices": 3,
            "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
            "qkv_bias": bias, "o_bias": bias,
            "qk_norm": "full"}  # q_norm over n_h*d_h, k_norm over n_kv*d_h


def _gpt_oss(c: Cfg) -> dict:
    h, L = c.int("hidden_size"), c.int("num_hidden_layers")
    bias = c.bool("attention_bias", True)
    return {"num_layers": L, "hidden_size": h, **_attention_shape(c, h),
            "num_experts": c.int("num_local_experts"),
            "top_k": c.first_int(("num_experts_per_tok", "experts_per_token")),
            "expert_ffn_size": c.int("intermediate_size"), "ffn_matrices": 3,
            "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
            "qkv_bias": bias, "o_bias": bias, "attention_sinks": True,
            "router_bias": True, "expert_bias": True,  # gate_up (2f) and down (h) biases per expert
            **_explicit_or_every_layer(c, L)}


def _dbrx(c: Cfg) -> dict:
    attn, ffn = c.sub("attn_config"), c.sub("ffn_config")
    h, L, n_h = c.int("d_model"), c.int("n_layers"), c.int("n_heads")
    if h % n_h:
        raise InputError(f"{c.source}: d_model={h} is not a multiple of n_heads={n_h}")
    return {"num_layers": L, "hidden_size": h, "num_attention_heads": n_h,
            "num_kv_heads": attn.int("kv_n_heads", n_h), "head_dim": h // n_h,
            "num_experts": ffn.int("moe_num_experts"), "top_k": ffn.int("moe_top_k"),
            "expert_ffn_size": ffn.int("ffn_hidden_size"), "ffn_matrices": 3,  # GLU experts (w1, v1, w2)
            "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
            # DBRX's LayerNorms have no bias: weights only, counted like RMSNorm
            "norm": "rmsnorm"}


def _phimoe(c: Cfg) -> dict:
    h, L = c.int("hidden_size"), c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    return {"num_layers": L, "hidden_size": h, **_attention_shape(c, h),
            "num_experts": c.int("num_local_experts"), "top_k": c.int("num_experts_per_tok"),
            "expert_ffn_size": c.int("intermediate_size"), "ffn_matrices": 3,
            "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
            "qkv_bias": bias, "o_bias": bias, "norm": "layernorm",  # LayerNorm with bias
            "lm_head_bias": c.bool("lm_head_bias", False), **_every_layer_sliding(c, L)}


def _llama4(c: Cfg) -> dict:
    """Llama-4 text decoder (``text_config`` of Llama4ForConditionalGeneration, or a
    Llama4ForCausalLM config): one shared expert of intermediate_size per MoE layer, dense
    layers of intermediate_size_mlp, MoE every interleave_moe_layer_step-th layer; RoPE
    layers use chunked attention (modelled as a window of attention_chunk_size tokens);
    the q/k norm is a weightless L2 norm."""
    h, L = c.int("hidden_size"), c.int("num_hidden_layers")
    explicit = c.int_list("moe_layers")
    if explicit is not None:
        bad = [i for i in explicit if i < 0 or i >= L]
        if bad:
            c._bad("moe_layers", bad, f"indices must be in 0..{L - 1}")
        moe_ids = explicit
    else:
        step = c.int("interleave_moe_layer_step", 1)
        moe_ids = list(range(step - 1, L, step))
    moe = _moe_layers_field(moe_ids, L)
    f = c.int("intermediate_size")
    bias = c.bool("attention_bias", False)
    out = {"num_layers": L, "hidden_size": h, **_attention_shape(c, h),
           "num_experts": c.int("num_local_experts"), "top_k": c.int("num_experts_per_tok"),
           "expert_ffn_size": f, "ffn_matrices": 3,
           "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
           "moe_layers": moe, "dense_ffn_size": _dense_size(c, moe, "intermediate_size_mlp"),
           "shared_expert_ffn_size": f, "qkv_bias": bias, "o_bias": bias}
    chunk = c.data.get("attention_chunk_size")
    if chunk is not None:
        chunk = c.int("attention_chunk_size")
        rope = c.int_list("no_rope_layers") or []
        if not rope:
            interval = c.int("no_rope_layer_interval", 4)
            rope = [int((i + 1) % interval != 0) for i in range(L)]
        if len(rope) != L:
            c._bad("no_rope_layers", "[...]", f"must have num_hidden_layers={L} entries")
        types = ["sliding" if r else "full" for r in rope]
        if "sliding" in types:
            out.update({"sliding_window": chunk, "layer_types": types})
    return out


def _generic(c: Cfg) -> dict:
    """Unknown family: common HF field names, with the DeepSeek/Qwen layer rules when their
    fields are present."""
    h = c.first_int(("hidden_size", "d_model", "n_embd"))
    L = c.first_int(("num_hidden_layers", "n_layers", "n_layer", "num_layers"))
    n_h = c.first_int(("num_attention_heads", "n_heads", "n_head", "num_heads"))
    n_kv = c.first_int(("num_key_value_heads", "num_kv_heads", "kv_n_heads"), n_h)
    if c.has("head_dim"):
        d_h = c.int("head_dim")
    elif h % n_h:
        raise InputError(f"{c.source}: head_dim is missing and hidden size {h} is not a multiple "
                         f"of {n_h} heads")
    else:
        d_h = h // n_h
    experts = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    if not any(c.has(k) for k in experts):
        raise InputError(f"{c.source}: {c.prefix}num_local_experts is missing (also looked for "
                         f"{', '.join(experts[1:])}): not a Mixture-of-Experts config "
                         f"({c.family})")
    f = c.first_int(("moe_intermediate_size", "expert_intermediate_size", "intermediate_size",
                     "ffn_hidden_size"))
    if c.has("first_k_dense_replace") or c.has("moe_layer_freq"):
        first, freq = c.int("first_k_dense_replace", 0, minimum=0), c.int("moe_layer_freq", 1)
        moe = _moe_layers_field([i for i in range(L) if i >= first and i % freq == 0], L)
    elif c.has("decoder_sparse_step") or c.has("mlp_only_layers"):
        moe = _qwen_moe_layers(c, L)
    else:
        moe = None
    shared = c.int("shared_expert_intermediate_size", 0, minimum=0) or c.int("n_shared_experts", 0, minimum=0) * f
    bias = c.bool("attention_bias", False)
    return {"num_layers": L, "hidden_size": h, "num_attention_heads": n_h, "num_kv_heads": n_kv,
            "head_dim": d_h, "num_experts": c.first_int(experts),
            "top_k": c.first_int(("num_experts_per_tok", "moe_top_k", "top_k", "experts_per_token")),
            "expert_ffn_size": f, "ffn_matrices": 3,
            "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
            "moe_layers": moe, "dense_ffn_size": _dense_size(c, moe, "intermediate_size"),
            "shared_expert_ffn_size": shared, "qkv_bias": bias, "o_bias": bias,
            **_explicit_or_every_layer(c, L)}


FAMILIES: dict[str, tuple[str, Callable[[Cfg], dict]]] = {
    "mixtral": ("Mixtral", _mixtral),
    "qwen2_moe": ("Qwen2-MoE", _qwen2_moe),
    "qwen3_moe": ("Qwen3-MoE", _qwen3_moe),
    "deepseek": ("DeepSeek-MoE", _deepseek),
    "deepseek_v2": ("DeepSeek-V2", _deepseek),
    "deepseek_v3": ("DeepSeek-V3", _deepseek),
    "olmoe": ("OLMoE", _olmoe),
    "gpt_oss": ("GPT-OSS", _gpt_oss),
    "dbrx": ("DBRX", _dbrx),
    "phimoe": ("Phi-MoE", _phimoe),
    "llama4": ("Llama-4", _llama4),
    "llama4_text": ("Llama-4", _llama4),
}
ARCHITECTURES: dict[str, str] = {
    "MixtralForCausalLM": "mixtral", "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe", "DeepseekForCausalLM": "deepseek",
    "DeepseekV2ForCausalLM": "deepseek_v2", "DeepseekV3ForCausalLM": "deepseek_v3",
    "OlmoeForCausalLM": "olmoe", "GptOssForCausalLM": "gpt_oss", "DbrxForCausalLM": "dbrx",
    "PhimoeForCausalLM": "phimoe", "PhiMoEForCausalLM": "phimoe",
    "Llama4ForConditionalGeneration": "llama4", "Llama4ForCausalLM": "llama4_text",
}


def family_of(config: dict) -> tuple[str | None, str]:
    """(model_type key of FAMILIES or None, a label for messages)."""
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch], arch
    mt = config.get("model_type")
    if isinstance(mt, str) and mt in FAMILIES:
        return mt, mt
    return None, arch or (mt if isinstance(mt, str) else "unknown architecture")


# ---------------------------------------------------------------- data types
def _dtypes(root: Cfg, text: Cfg, weight_dtype: str | None) -> dict:
    """weight_dtype, expert_weight_dtype and kv_dtype from torch_dtype and quantization_config
    (or an explicit ``weight_dtype``: 'mxfp4' = MXFP4 routed experts, the rest in the
    checkpoint's type)."""
    raw, where = None, None
    for c in (text, root):
        for key in ("torch_dtype", "dtype"):
            if raw is None and c.has(key):
                raw, where = c.str(key), f"{c.prefix}{key}"
    if raw is None:
        base = DEFAULT_DTYPE
    elif raw in TORCH_DTYPES:
        base = TORCH_DTYPES[raw]
    else:
        raise InputError(f"{root.source}: {where}={raw!r}: unknown dtype (known: "
                         f"{', '.join(sorted(TORCH_DTYPES))})")
    activation = base if base in ("bf16", "fp16", "fp32") else "bf16"
    out = {"weight_dtype": activation, "expert_weight_dtype": None, "kv_dtype": activation}
    if weight_dtype is not None:
        if weight_dtype not in DTYPE_BYTES:
            raise InputError(f"weight dtype {weight_dtype!r}: unknown (known: {', '.join(DTYPE_BYTES)})")
        if weight_dtype == "mxfp4":
            out["expert_weight_dtype"] = "mxfp4"
        else:
            out["weight_dtype"] = weight_dtype
        return out
    out["weight_dtype"] = base
    quant = root.data.get("quantization_config") or text.data.get("quantization_config")
    if quant is not None:
        qc = root.sub("quantization_config") if root.has("quantization_config") else text.sub("quantization_config")
        method = qc.str("quant_method")
        if method in ("fp8", "fbgemm_fp8") or (method == "compressed-tensors" and _compressed_fp8(qc)):
            out["weight_dtype"] = "fp8"
        elif method == "mxfp4":
            out["expert_weight_dtype"] = "mxfp4"
        else:
            raise InputError(f"{root.source}: {qc.prefix}quant_method={method!r}: not supported "
                             f"(fp8, fbgemm_fp8, compressed-tensors FP8, mxfp4); give the weight "
                             f"type explicitly (--weight-dtype)")
    return out


def _compressed_fp8(qc: Cfg) -> bool:
    """compressed-tensors whose every weight group is 8-bit float (e.g. "FP8-dynamic")."""
    groups = qc.data.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        return False
    for group in groups.values():
        weights = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(weights, dict) or weights.get("num_bits") != 8 or weights.get("type") != "float":
            return False
    return True


# ---------------------------------------------------------------- entry points
def model_from_hf_config(config: dict, *, name: str | None = None, weight_dtype: str | None = None,
                         source: str = "config.json") -> dict:
    """A moeopt model section (every ModelSpec field, validated) from a HF config dict."""
    if not isinstance(config, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(config).__name__}")
    key, label = family_of(config)
    root = Cfg(config, source, label)
    text = root.sub("text_config") if isinstance(config.get("text_config"), dict) else root
    fields = (FAMILIES[key][1] if key else _generic)(text)
    fields.update(_dtypes(root, text, weight_dtype))
    fields["name"] = name or _default_name(config, label)
    try:
        return ModelSpec.model_validate(fields).model_dump()
    except ValidationError as exc:
        raise InputError(validation_message(f"model from {source}", exc)) from None


def _default_name(config: dict, label: str) -> str:
    path = config.get("_name_or_path")
    return path if isinstance(path, str) and path else label


def is_hf_config(doc: object) -> bool:
    """A HuggingFace config rather than a moeopt model or instance."""
    return isinstance(doc, dict) and "num_layers" not in doc and "model" not in doc and (
        "architectures" in doc or "model_type" in doc or "text_config" in doc)


def load_model_section(path: str, *, weight_dtype: str | None = None) -> tuple[str, dict, dict | None]:
    """(kind, model section, the instance dict or None) from an instance, a moeopt model JSON
    or a HF config.json. kind is 'instance', 'model' or 'hf'. HF configs are converted;
    moeopt models are validated (errors name the field)."""
    doc = read_json(path, "model file")
    if not isinstance(doc, dict):
        raise InputError(f"model file {path}: expected a JSON object, got {type(doc).__name__}")
    if is_hf_config(doc):
        return "hf", model_from_hf_config(doc, weight_dtype=weight_dtype, source=str(path)), None
    kind, inst, wrapped = "model", None, "model" in doc
    if wrapped:
        kind = "instance" if "hardware" in doc else "model"
        inst = doc if kind == "instance" else None
        doc = doc["model"]
    if not isinstance(doc, dict):
        raise InputError(f"model file {path}: model must be a JSON object")
    try:
        section = ModelSpec.model_validate(doc).model_dump()
    except ValidationError as exc:
        what = f"model file {path}"
        msg = validation_message(what, exc)
        if wrapped:  # name the field as it sits in the file
            msg = msg.replace(f"{what}: ", f"{what}: model.", 1)
        raise InputError(msg) from None
    if weight_dtype is not None:
        section = with_weight_dtype(section, weight_dtype)
    return kind, section, inst


def with_weight_dtype(section: dict, weight_dtype: str) -> dict:
    """The model with its weights in ``weight_dtype`` ('mxfp4': routed experts only)."""
    out = dict(section)
    if weight_dtype == "mxfp4":
        out["expert_weight_dtype"] = "mxfp4"
        if out["weight_dtype"] == "mxfp4":
            out["weight_dtype"] = "bf16"
    else:
        out["weight_dtype"], out["expert_weight_dtype"] = weight_dtype, None
    return ModelSpec.model_validate(out).model_dump()


# ---------------------------------------------------------------- parts outside the decoder
def hf_extra_params(config: dict) -> dict[str, int]:
    """Parameters a checkpoint holds beyond the deployed text decoder (not in ModelSpec):
    DeepSeek-V3's multi-token-prediction module(s) (``mtp_params``: one MoE decoder layer,
    eh_proj 2h x h and three norms each; embedding and head shared) and Llama-4's vision
    encoder with its projector (``vision_params``)."""
    from optimizer.costs import formulas as cm
    out: dict[str, int] = {}
    key, _ = family_of(config)
    if key in ("deepseek_v2", "deepseek_v3") and isinstance(config.get("num_nextn_predict_layers"), int) \
            and config["num_nextn_predict_layers"] > 0:
        m = ModelSpec.model_validate(model_from_hf_config(config))
        h = m.hidden_size
        moe_layer = m.moe_layer_ids[-1]
        per = cm.layer_params(m, moe_layer) + 2 * h * h + 3 * h
        out["mtp_params"] = config["num_nextn_predict_layers"] * per
    vc = config.get("vision_config")
    if key == "llama4" and isinstance(vc, dict) and isinstance(config.get("text_config"), dict):
        out["vision_params"] = _llama4_vision_params(Cfg(vc, "config.json", "Llama-4 vision", "vision_config."),
                                                     Cfg(config["text_config"], "config.json", "Llama-4",
                                                         "text_config.").int("hidden_size"))
    return out


def _llama4_vision_params(v: Cfg, text_hidden: int) -> int:
    """Llama-4 vision tower (ViT with biased attention/MLP and LayerNorms), pixel-shuffle
    adapter MLP and the projector into the text width."""
    h, L, f = v.int("hidden_size"), v.int("num_hidden_layers"), v.int("intermediate_size")
    patch, image, ch = v.int("patch_size"), v.int("image_size"), v.int("num_channels", 3)
    layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
    patches = (image // patch) ** 2
    tower = L * layer + ch * patch * patch * h + h + (patches + 1) * h + 4 * h
    ratio = v.data.get("pixel_shuffle_ratio", 0.5)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
        v._bad("pixel_shuffle_ratio", ratio, "must be a positive number")
    shuffle = int(round(h / (ratio * ratio)))  # channels after pixel shuffle
    adapter = shuffle * v.int("projector_input_dim") + v.int("projector_input_dim") * v.int("projector_output_dim")
    projector = v.int("vision_output_dim") * text_hidden
    return tower + adapter + projector


def usable_memory_gb(memory_gb: float, runtime_reserve_gb: float, nccl_buffer_gb: float) -> float:
    """Memory per GPU left for weights after the runtime and NCCL (no KV, no activations)."""
    return memory_gb - runtime_reserve_gb - nccl_buffer_gb


def min_gpus_for_weights(weight_bytes: float, usable_gb: float) -> int:
    """GPUs whose usable memory together holds every weight once (a lower bound)."""
    return max(1, math.ceil(weight_bytes / (usable_gb * 1e9))) if usable_gb > 0 else 0
