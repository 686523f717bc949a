"""Family detection (``architectures[0]``, then ``model_type``) and the per-family mapping of
HF fields to ``ModelSpec`` fields: Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek (V1 GQA, V2/V3
MLA), OLMoE, GPT-OSS, DBRX, Phi-3.5-MoE, Llama-4, MiniMax-M2, and generic field names for anything else.
Each mapper takes the decoder's ``Cfg`` and returns a dict of model fields (no dtypes, no name)."""

from __future__ import annotations

from collections.abc import Callable

from optimizer.errors import InputError
from optimizer.inputs.hf.config import Cfg


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


def generic_fields(c: Cfg) -> dict:
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


def _minimax_m2(c: Cfg) -> dict:
    """MiniMax-M2 / M2.5: every layer MoE (``num_local_experts`` of ``intermediate_size``), no
    shared expert; ``use_qk_norm`` with ``qk_norm_type`` "per_layer" is one RMSNorm over all
    query heads and one over all key heads ((n_h + n_kv) * d_h weights per layer);
    ``use_routing_bias`` is the router's score-correction bias (E per layer)."""
    h, L = c.int("hidden_size"), c.int("num_hidden_layers")
    qk_norm = "none"
    if c.bool("use_qk_norm", False):
        kind = c.str("qk_norm_type") if c.has("qk_norm_type") else "per_layer"
        if kind not in ("per_layer", "per_head"):
            c._bad("qk_norm_type", kind, "must be 'per_layer' or 'per_head'")
        qk_norm = "full" if kind == "per_layer" else "per_head"
    if c.int("shared_intermediate_size", 0, minimum=0):
        c._bad("shared_intermediate_size", c.data["shared_intermediate_size"],
               "a shared expert is not part of the MiniMax-M2 layout moeopt reads (expected 0)")
    return {"num_layers": L, "hidden_size": h, **_attention_shape(c, h),
            "num_experts": c.int("num_local_experts"), "top_k": c.int("num_experts_per_tok"),
            "expert_ffn_size": c.int("intermediate_size"), "ffn_matrices": 3,
            "vocab_size": c.int("vocab_size"), "tie_word_embeddings": c.bool("tie_word_embeddings", False),
            "qk_norm": qk_norm, "router_bias": c.bool("use_routing_bias", False)}


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
    "minimax_m2": ("MiniMax-M2", _minimax_m2),
}
ARCHITECTURES: dict[str, str] = {
    "MixtralForCausalLM": "mixtral", "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe", "DeepseekForCausalLM": "deepseek",
    "DeepseekV2ForCausalLM": "deepseek_v2", "DeepseekV3ForCausalLM": "deepseek_v3",
    "OlmoeForCausalLM": "olmoe", "GptOssForCausalLM": "gpt_oss", "DbrxForCausalLM": "dbrx",
    "PhimoeForCausalLM": "phimoe", "PhiMoEForCausalLM": "phimoe",
    "Llama4ForConditionalGeneration": "llama4", "Llama4ForCausalLM": "llama4_text",
    "MiniMaxM2ForCausalLM": "minimax_m2",
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
