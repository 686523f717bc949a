"""The cost model: every formula once, in float SI units (parameters, FLOP, bytes, seconds).

Sources and decisions: ``docs/cost-model.md`` (section numbers cited per function).
Decisions that matter: causal halving of prefill attention FLOPs; routed-expert FLOPs carry
top-k and divide over EP and ETP; KV split by stage, by TP over KV heads and by attention-DP
over sequences; embedding on the first stage and LM head on the last, vocab-parallel over TP;
all-to-all split into intra- and inter-node shares from the rank-to-node layout; LM head in
prefill for the last position of each sequence only; MoE time set by the hottest EP rank.

Nothing here knows about CP-SAT; ``tables.py`` turns these figures into integers.
"""

from __future__ import annotations

from optimizer.inputs.schema import DTYPE_BYTES, GpuSpec, HardwareSpec, ModelSpec


# ---------------------------------------------------------------- parameters (§1.1)
def _norm_weights(m: ModelSpec, width: int) -> int:
    """Weights of one norm over ``width`` features (LayerNorm also has a bias)."""
    return width * (2 if m.norm == "layernorm" else 1)


def attention_matrix_params(m: ModelSpec) -> int:
    """Weights of the attention projections of one layer (the FLOP-bearing part).

    MHA/GQA: Q, K, V, O. MLA (DeepSeek): q (low-rank or full), the joint KV down-projection
    to the latent plus the rotary key, the KV up-projection, and O."""
    h, n_h = m.hidden_size, m.num_attention_heads
    if m.attention == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        q = (h * m.q_lora_rank + m.q_lora_rank * n_h * qk) if m.q_lora_rank else h * n_h * qk
        kv_down = h * (m.kv_lora_rank + m.qk_rope_head_dim)
        kv_up = m.kv_lora_rank * n_h * (m.qk_nope_head_dim + m.head_dim)
        return q + kv_down + kv_up + n_h * m.head_dim * h
    q_width, kv_width = n_h * m.head_dim, m.num_kv_heads * m.head_dim
    return h * q_width + 2 * h * kv_width + q_width * h


def attention_params(m: ModelSpec) -> int:
    """All attention weights of one layer: projections, biases, q/k norms, sinks, and the
    MLA low-rank norms."""
    n_h, d_h = m.num_attention_heads, m.head_dim
    extra = 0
    if m.attention == "mla":
        extra += m.kv_lora_rank + (m.q_lora_rank if m.q_lora_rank else 0)
    else:
        if m.qkv_bias:
            extra += (n_h + 2 * m.num_kv_heads) * d_h
        if m.qk_norm == "per_head":
            extra += 2 * d_h
        elif m.qk_norm == "full":
            extra += (n_h + m.num_kv_heads) * d_h
    if m.o_bias:
        extra += m.hidden_size
    if m.attention_sinks:
        extra += n_h
    return attention_matrix_params(m) + extra


def expert_params(m: ModelSpec) -> int:
    """One routed expert: g matrices of h x f (plus its biases, if any)."""
    bias = ((m.ffn_matrices - 1) * m.expert_ffn_size + m.hidden_size) if m.expert_bias else 0
    return m.ffn_matrices * m.hidden_size * m.expert_ffn_size + bias


def router_params(m: ModelSpec) -> int:
    return m.hidden_size * m.num_experts + (m.num_experts if m.router_bias else 0)


def shared_expert_params(m: ModelSpec) -> int:
    """Shared expert(s) of one MoE layer, with their gate."""
    gate = m.hidden_size if m.shared_expert_gate else 0
    return m.ffn_matrices * m.hidden_size * m.shared_expert_ffn_size + gate


def dense_ffn_params(m: ModelSpec) -> int:
    """The FFN of a dense (non-MoE) layer."""
    return m.ffn_matrices * m.hidden_size * m.dense_ffn_size


def norm_params_per_layer(m: ModelSpec) -> int:
    return 2 * _norm_weights(m, m.hidden_size)


def embedding_params(m: ModelSpec) -> int:
    return m.vocab_size * m.hidden_size


def head_params(m: ModelSpec) -> int:
    """LM head weights (0 when tied to the embedding) and bias; the final norm apart."""
    weights = 0 if m.tie_word_embeddings else m.vocab_size * m.hidden_size
    return weights + (m.vocab_size if m.lm_head_bias else 0)


def is_moe_layer(m: ModelSpec, layer: int) -> bool:
    return m.moe_layers is None or layer in m.moe_layers


def layer_params(m: ModelSpec, layer: int = 0) -> int:
    """Weights of one layer."""
    common = attention_params(m) + norm_params_per_layer(m)
    if is_moe_layer(m, layer):
        return (common + m.num_experts * expert_params(m) + router_params(m)
                + shared_expert_params(m))
    return common + dense_ffn_params(m)


def layer_active_params(m: ModelSpec, layer: int = 0) -> int:
    """Weights one token touches in one layer (top-k routed experts)."""
    common = attention_params(m) + norm_params_per_layer(m)
    if is_moe_layer(m, layer):
        return common + m.top_k * expert_params(m) + router_params(m) + shared_expert_params(m)
    return common + dense_ffn_params(m)


def _outside_layers(m: ModelSpec) -> int:
    return embedding_params(m) + head_params(m) + _norm_weights(m, m.hidden_size)


def total_params(m: ModelSpec) -> int:
    return sum(layer_params(m, l) for l in range(m.num_layers)) + _outside_layers(m)


def active_params(m: ModelSpec) -> int:
    """Parameters one token touches: top-k experts, embedding and head counted."""
    return sum(layer_active_params(m, l) for l in range(m.num_layers)) + _outside_layers(m)


def active_params_no_embedding(m: ModelSpec) -> int:
    """Active parameters without the input embedding (the head counted): DeepSeek's and
    OpenAI's convention."""
    return active_params(m) - embedding_params(m)


def routed_expert_params_total(m: ModelSpec) -> int:
    return len(m.moe_layer_ids) * m.num_experts * expert_params(m)


def unquantized_dtype(m: ModelSpec) -> str:
    """Type of the weights an 8- or 4-bit checkpoint leaves in 16 bits: everything but the
    linear projections (embedding, LM head, router, norms, biases, q/k norms, sinks). The
    public FP8 checkpoints (DeepSeek-V3, Qwen3-*-FP8, MiniMax-M2: ``modules_to_not_convert``
    lm_head, gate, e_score_correction_bias) and the runtimes' FP8 modes keep them in bf16;
    with 16- or 32-bit weights it is the weight type itself."""
    return "bf16" if DTYPE_BYTES[m.weight_dtype] < 2 else m.weight_dtype


def quantized_params_per_layer(m: ModelSpec, layer: int = 0) -> int:
    """The linear projections of one layer held in ``weight_dtype`` (routed experts apart):
    the attention matrices and the shared expert's or dense FFN's matrices."""
    if is_moe_layer(m, layer):
        return attention_matrix_params(m) + m.ffn_matrices * m.hidden_size * m.shared_expert_ffn_size
    return attention_matrix_params(m) + dense_ffn_params(m)


def weight_bytes(m: ModelSpec) -> float:
    """All weights: the linear projections in ``weight_dtype``, routed experts in their own
    type, the rest in ``unquantized_dtype``."""
    experts = routed_expert_params_total(m)
    quantized = sum(quantized_params_per_layer(m, l) for l in range(m.num_layers))
    return (quantized * DTYPE_BYTES[m.weight_dtype]
            + (total_params(m) - experts - quantized) * DTYPE_BYTES[unquantized_dtype(m)]
            + experts * DTYPE_BYTES[m.expert_weight_dtype or m.weight_dtype])


def expert_bytes(m: ModelSpec) -> float:
    """Bytes of one routed expert."""
    return expert_params(m) * DTYPE_BYTES[m.expert_weight_dtype or m.weight_dtype]


# ---------------------------------------------------------------- KV cache (§1.3)
def kv_heads_per_gpu(m: ModelSpec, tp: int) -> int:
    """KV heads one TP rank stores: split when TP <= n_kv, else replicated (one head)."""
    return max(m.num_kv_heads // tp, 1)


def kv_bytes_per_token_layer(m: ModelSpec, tp: int = 1) -> float:
    """K and V of one token in one layer on one TP rank, bytes. MLA keeps one latent
    (d_c + rotary key) per token that every TP rank holds whole."""
    if m.attention == "mla":
        return (m.kv_lora_rank + m.qk_rope_head_dim) * DTYPE_BYTES[m.kv_dtype]
    return 2 * kv_heads_per_gpu(m, tp) * m.head_dim * DTYPE_BYTES[m.kv_dtype]


def kv_tokens(m: ModelSpec, layer: int, context_tokens: int) -> int:
    """Tokens of one sequence whose KV a layer keeps: a sliding layer keeps its window."""
    if m.is_sliding(layer):
        return min(context_tokens, m.sliding_window)
    return context_tokens


def kv_bytes_per_token(m: ModelSpec) -> float:
    """K and V of one token over all layers, unsplit, bytes (no window cap)."""
    return m.num_layers * kv_bytes_per_token_layer(m, 1)


# Default memory fractions of the runtimes: vLLM's and TensorRT-LLM's documented 0.9; SGLang
# derives its default from the GPU memory and TP size (0.88 is its single-GPU value): pass the
# fraction the deployment launches with.
RUNTIME_MEMORY_FRACTION = {"vllm": 0.9, "sglang": 0.88, "trtllm": 0.9}


def runtime_kv_pool_bytes(runtime: str, capacity_bytes: float, weight_bytes: float,
                          activation_bytes: float, reserve_bytes: float,
                          fraction: float | None = None) -> float:
    """KV-cache pool one GPU gets, bytes, as each runtime sizes it from its memory fraction
    (``fraction``; None = its default), given the GPU's capacity, the weights, the peak
    activations of a forward step and the non-tensor reserve (CUDA context, NCCL):

    - vLLM (``gpu_memory_utilization``): fraction x capacity - weights - peak activations -
      non-torch memory (vLLM's memory profiling, docs "gpu_memory_utilization");
    - SGLang (``mem_fraction_static``): fraction x capacity - weights (the static part holds
      the weights and the KV pool; activations and CUDA graphs live outside it);
    - TensorRT-LLM (``kv_cache_config.free_gpu_memory_fraction``): fraction x the memory
      free after loading the weights and a warm-up step (capacity - weights - activations -
      reserve).
    Never negative."""
    if runtime not in RUNTIME_MEMORY_FRACTION:
        raise ValueError(f"runtime {runtime!r}: one of {', '.join(RUNTIME_MEMORY_FRACTION)}")
    f = RUNTIME_MEMORY_FRACTION[runtime] if fraction is None else fraction
    if runtime == "vllm":
        pool = f * capacity_bytes - weight_bytes - activation_bytes - reserve_bytes
    elif runtime == "sglang":
        pool = f * capacity_bytes - weight_bytes
    else:  # trtllm
        pool = f * (capacity_bytes - weight_bytes - activation_bytes - reserve_bytes)
    return max(pool, 0.0)


# ---------------------------------------------------------------- FLOPs (§1.2)
def mean_attended(context_tokens: int, window: int | None) -> float:
    """Mean number of keys a prompt position attends to, causal (with a window cap)."""
    s = context_tokens
    if window is None or window >= s:
        return s / 2
    return window - window * window / (2 * s)


def attention_core_flops_per_key(m: ModelSpec) -> float:
    """Scores + context of one query position against one key in one layer:
    2 * n_h * (d_qk + d_v) (= 4 * n_h * d_h for MHA/GQA)."""
    if m.attention == "mla":
        width = m.num_attention_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.head_dim)
    else:
        width = 2 * m.num_attention_heads * m.head_dim
    return 2.0 * width


def attention_core_flops_per_token(m: ModelSpec, prompt_tokens: int, layer: int = 0) -> float:
    """Scores + context of one prompt token in one layer, causal average:
    2 * n_h * (d_qk + d_v) * mean attended keys (= 2 * n_h*d_h * s for full MHA)."""
    window = m.sliding_window if m.is_sliding(layer) else None
    return attention_core_flops_per_key(m) * mean_attended(prompt_tokens, window)


def attended_keys(start: int, tokens: int, window: int | None) -> float:
    """Keys that prompt positions start .. start+tokens-1 attend to in all, causal, with the
    continuous count of ``mean_attended``: position x attends to min(x, window) keys, so
    the sum is G(start+tokens) - G(start) with G(x) = x^2/2, or x*w - w^2/2 past the window
    (for start = 0 this is tokens * mean_attended(tokens, window))."""
    def cumulative(x: int) -> float:
        if window is None or x <= window:
            return x * x / 2
        return x * window - window * window / 2
    return cumulative(start + tokens) - cumulative(start)


def _ffn_router_flops_per_token_layer(m: ModelSpec, layer: int) -> float:
    """Router and shared expert (MoE layer) or the dense FFN (dense layer), one token."""
    if is_moe_layer(m, layer):
        return 2.0 * m.hidden_size * m.num_experts + 2.0 * m.ffn_matrices * m.hidden_size * m.shared_expert_ffn_size
    return 2.0 * dense_ffn_params(m)


def linear_flops_per_token_layer(m: ModelSpec, layer: int = 0) -> float:
    """Non-routed FLOPs of one token in one layer without the attention core: projections,
    router, shared expert or dense FFN (the same for prompt and generated tokens)."""
    return 2.0 * attention_matrix_params(m) + _ffn_router_flops_per_token_layer(m, layer)


def dense_flops_per_token_layer(m: ModelSpec, prompt_tokens: int, layer: int = 0) -> float:
    """Non-routed FLOPs of one prompt token in one layer: projections, core, router,
    shared expert (MoE layers) or the dense FFN (dense layers)."""
    flops = 2.0 * attention_matrix_params(m) + attention_core_flops_per_token(m, prompt_tokens, layer)
    return flops + _ffn_router_flops_per_token_layer(m, layer)


def decode_attention_flops_per_token(m: ModelSpec, context_tokens: int) -> float:
    """Scores + context of one generated token against ``context_tokens`` cached keys:
    4 * n_h * d_h * c (MHA/GQA); MLA with weight absorption 2 * n_h * (2 d_c + d_rope) * c
    (docs/cost-model.md §1.2). Linear in c, so a sum of contexts gives the sum of FLOPs."""
    if m.attention == "mla":
        return 2.0 * m.num_attention_heads * (2 * m.kv_lora_rank + m.qk_rope_head_dim) * context_tokens
    return 4.0 * m.num_attention_heads * m.head_dim * context_tokens


def decode_dense_flops_per_token_layer(m: ModelSpec, context_tokens: int, layer: int = 0) -> float:
    """Non-routed FLOPs of one generated token in one layer (context already window-capped)."""
    flops = 2.0 * attention_matrix_params(m) + decode_attention_flops_per_token(m, context_tokens)
    return flops + _ffn_router_flops_per_token_layer(m, layer)


def expected_experts_hit_fraction(m: ModelSpec, tokens: float) -> float:
    """Expected share of a layer's experts that ``tokens`` tokens reach under uniform
    top-k routing: 1 - (1 - k/E)^tokens (docs/cost-model.md §1.4)."""
    return 1.0 - (1.0 - m.top_k / m.num_experts) ** tokens


def expert_flops_per_routed_token(m: ModelSpec) -> float:
    """FLOPs of one token copy through one expert: 2 * g*h*f."""
    return 2.0 * m.ffn_matrices * m.hidden_size * m.expert_ffn_size


def prefill_flops_per_token(m: ModelSpec, prompt_tokens: int) -> float:
    """Forward FLOPs of one prompt token over all layers, LM head excluded (it runs once
    per sequence in prefill)."""
    routed = m.top_k * expert_flops_per_routed_token(m)
    return sum(dense_flops_per_token_layer(m, prompt_tokens, l) + (routed if is_moe_layer(m, l) else 0.0)
               for l in range(m.num_layers))


def lm_head_flops_per_sequence(m: ModelSpec) -> float:
    """Logits for the last prompt position: 2 * h * V."""
    return 2.0 * m.hidden_size * m.vocab_size


# ---------------------------------------------------------------- time (§1.4, §1.5)
# ``eta`` (optional): an operator's achieved fraction of speed of light from a hardware
# profile (``costs/profile.py``); then time = SOL time / eta with ``eff`` giving the peak of
# the operator's compute type. Without it the flat instance efficiencies apply (§1.4).
def compute_s(flops: float, gpu: GpuSpec, eff=None, eta: float | None = None,
              op_dtype: str | None = None) -> float:
    """Seconds to execute ``flops`` at the achieved FLOP/s."""
    if eta is not None:
        return flops / (eff.flop_rate(op_dtype) * eta)
    return flops / (gpu.peak_tflops * 1e12 * gpu.compute_efficiency)


def hbm_s(num_bytes: float, gpu: GpuSpec, eta: float | None = None) -> float:
    """Seconds to stream ``num_bytes`` from HBM at the achieved bandwidth."""
    if eta is not None:
        return num_bytes / (gpu.hbm_bandwidth_gb_s * 1e9 * eta)
    return num_bytes / (gpu.hbm_bandwidth_gb_s * 1e9 * gpu.hbm_efficiency)


def roofline_s(flops: float, num_bytes: float, gpu: GpuSpec, eff=None, eta: float | None = None,
               op_dtype: str | None = None) -> float:
    """max(compute time, memory time) of one operator (flat: each at its own efficiency;
    profiled: the speed-of-light time over ``eta``)."""
    return max(compute_s(flops, gpu, eff, eta, op_dtype), hbm_s(num_bytes, gpu, eta))


def elementwise_bytes_per_token_layer(m: ModelSpec, layer: int, tp: int) -> float:
    """HBM bytes the separate elementwise kernels of one layer move per token on one TP rank
    (16-bit activations): two fused residual-add + RMSNorm (read the input and the residual,
    write the normalised output and the new residual: 4h each) and, for a gated non-routed
    FFN (shared expert or dense FFN), the activation gate (read gate and up, write their
    product: 3 x its width / TP). The routed experts' gate is inside their grouped GEMM."""
    a = 2
    width = m.shared_expert_ffn_size if is_moe_layer(m, layer) else m.dense_ffn_size
    gate = 3 * width / tp if m.ffn_matrices == 3 else 0.0
    return a * (2 * 4 * m.hidden_size + gate)


def link(hw: HardwareSpec, inter_node: bool) -> tuple[float, float]:
    """(bandwidth B/s, latency s) of the intra- or inter-node link of one GPU."""
    if inter_node:
        return hw.inter_node_bandwidth_gb_s * 1e9, hw.inter_node_latency_us * 1e-6
    return hw.intra_node_bandwidth_gb_s * 1e9, hw.intra_node_latency_us * 1e-6


def allreduce_s(num_bytes: float, n: int, bandwidth_b_s: float, latency_s: float,
                measured: tuple[float, float] | None = None) -> float:
    """Ring all-reduce of ``num_bytes`` over ``n`` GPUs: 2(n-1)/n * S / BW + 2(n-1) * alpha.
    ``measured`` = (per-message latency s, bandwidth eta) from a profile replaces the
    per-step latencies by one per-message latency and scales BW by eta."""
    if n <= 1:
        return 0.0
    if measured is not None:
        return 2 * (n - 1) / n * num_bytes / (bandwidth_b_s * measured[1]) + measured[0]
    return 2 * (n - 1) / n * num_bytes / bandwidth_b_s + 2 * (n - 1) * latency_s


def allgather_s(num_bytes: float, n: int, bandwidth_b_s: float, latency_s: float,
                measured: tuple[float, float] | None = None) -> float:
    """Ring all-gather (or reduce-scatter) of ``num_bytes`` in all: (n-1)/n * S / BW
    (``measured``: as in ``allreduce_s``; its latency is added only with ``latency_s`` > 0)."""
    if n <= 1:
        return 0.0
    if measured is not None:
        return (n - 1) / n * num_bytes / (bandwidth_b_s * measured[1]) + (measured[0] if latency_s else 0.0)
    return (n - 1) / n * num_bytes / bandwidth_b_s + (n - 1) * latency_s


def all_to_all_hot_s(bytes_from_each_peer: float, local_peers: int, remote_peers: int,
                     hw: HardwareSpec) -> float:
    """Receive time of one rank in an all-to-all (alpha-beta, no latency): intra- and
    inter-node shares each over its own link, the slower sets the time (cost-model decision
    5). ``local_peers`` excludes the rank itself. A profile's kernel family replaces this
    (``profiled.a2a_profiled_s``)."""
    intra_bw, _ = link(hw, False)
    inter_bw, _ = link(hw, True)
    return max(bytes_from_each_peer * local_peers / intra_bw,
               bytes_from_each_peer * remote_peers / inter_bw)


def hit_probability(num_experts: int, top_k: int, experts_in_group: int) -> float:
    """Probability that a token's top-k experts (k distinct of E, uniform routing) include at
    least one of a given group of ``experts_in_group`` experts: 1 - C(E-g, k) / C(E, k)."""
    miss = 1.0
    for i in range(top_k):
        miss *= max(num_experts - experts_in_group - i, 0) / (num_experts - i)
    return 1.0 - miss


def deepep_normal_bytes(tokens_per_rank: float, hidden: int, act_bytes: int, num_experts: int,
                        top_k: int, ep: int, ranks_per_node: int) -> tuple[float, float]:
    """(NVLink, RDMA) bytes one rank receives in one direction of DeepEP's normal (high-
    throughput) all-to-all with balanced routing. The kernels send a token once per
    destination rank it reaches (not once per expert), and across nodes once per
    destination node over RDMA, forwarding it inside the node over NVLink (DeepSeek-V3
    report, arXiv 2412.19437 §3.2.2; deepseek-ai/DeepEP README): NVLink carries
    (EP-1) * T * h * a * P(rank hit), RDMA (nodes-1) * T * h * a * P(node hit)."""
    row = tokens_per_rank * hidden * act_bytes
    per_rank = num_experts // ep
    nvlink = (ep - 1) * row * hit_probability(num_experts, top_k, per_rank)
    nodes = max(ep // max(ranks_per_node, 1), 1)
    rdma = (nodes - 1) * row * hit_probability(num_experts, top_k, per_rank * ranks_per_node)
    return nvlink, rdma


# ---------------------------------------------------------------- pipeline (§1.6)
def pipeline_makespan(stage_s: list[float], micro_batches: int, p2p_s: float) -> float:
    """Forward makespan of a batch through unbalanced stages:
    sum_j t_j + (m-1) * max_j t_j + (p-1) * t_p2p."""
    return (sum(stage_s) + (micro_batches - 1) * max(stage_s)
            + (len(stage_s) - 1) * p2p_s)
