"""The cost model: every formula once, in float SI units (parameters, FLOP, bytes, seconds).

Sources and decisions: ``shared/design/cost-model.md`` (section numbers cited per function).
Decisions that matter: causal halving of prefill attention FLOPs; routed-expert FLOPs carry
top-k and divide over EP and ETP; KV split by stage, by TP over KV heads and by attention-DP
over sequences; embedding on the first stage and LM head on the last, vocab-parallel over TP;
all-to-all split into intra- and inter-node shares from the rank-to-node layout; LM head in
prefill for the last position of each sequence only; MoE time set by the hottest EP rank.

Nothing here knows about CP-SAT; ``tables.py`` turns these figures into integers.
"""

from __future__ import annotations

from optimizer.schema import DTYPE_BYTES, GpuSpec, HardwareSpec, ModelSpec


# ---------------------------------------------------------------- parameters (§1.1)
def attention_params(m: ModelSpec) -> int:
    """Q, K, V and O projection weights of one layer (no biases)."""
    q_width = m.num_attention_heads * m.head_dim
    kv_width = m.num_kv_heads * m.head_dim
    return m.hidden_size * q_width + 2 * m.hidden_size * kv_width + q_width * m.hidden_size


def expert_params(m: ModelSpec) -> int:
    """One routed expert: g matrices of h x f."""
    return m.ffn_matrices * m.hidden_size * m.expert_ffn_size


def router_params(m: ModelSpec) -> int:
    return m.hidden_size * m.num_experts


def norm_params_per_layer(m: ModelSpec) -> int:
    return 2 * m.hidden_size


def embedding_params(m: ModelSpec) -> int:
    return m.vocab_size * m.hidden_size


def head_params(m: ModelSpec) -> int:
    """LM head weights (0 when tied to the embedding); the final norm is counted apart."""
    return 0 if m.tie_word_embeddings else m.vocab_size * m.hidden_size


def layer_params(m: ModelSpec) -> int:
    return (attention_params(m) + m.num_experts * expert_params(m) + router_params(m)
            + norm_params_per_layer(m))


def total_params(m: ModelSpec) -> int:
    return (m.num_layers * layer_params(m) + embedding_params(m) + head_params(m)
            + m.hidden_size)


def active_params(m: ModelSpec) -> int:
    """Parameters one token touches: top-k experts, embedding and head counted."""
    per_layer = (attention_params(m) + m.top_k * expert_params(m) + router_params(m)
                 + norm_params_per_layer(m))
    return m.num_layers * per_layer + embedding_params(m) + head_params(m) + m.hidden_size


def weight_bytes(m: ModelSpec) -> float:
    return total_params(m) * DTYPE_BYTES[m.weight_dtype]


# ---------------------------------------------------------------- KV cache (§1.3)
def kv_heads_per_gpu(m: ModelSpec, tp: int) -> int:
    """KV heads one TP rank stores: split when TP <= n_kv, else replicated (one head)."""
    return max(m.num_kv_heads // tp, 1)


def kv_bytes_per_token_layer(m: ModelSpec, tp: int = 1) -> float:
    """K and V of one token in one layer on one TP rank, bytes."""
    return 2 * kv_heads_per_gpu(m, tp) * m.head_dim * DTYPE_BYTES[m.kv_dtype]


def kv_bytes_per_token(m: ModelSpec) -> float:
    """K and V of one token over all layers, unsplit, bytes."""
    return m.num_layers * kv_bytes_per_token_layer(m, 1)


# ---------------------------------------------------------------- FLOPs (§1.2)
def attention_core_flops_per_token(m: ModelSpec, prompt_tokens: int) -> float:
    """Scores + context of one prompt token in one layer, causal average: 2 * n_h*d_h * s."""
    return 2.0 * m.num_attention_heads * m.head_dim * prompt_tokens


def dense_flops_per_token_layer(m: ModelSpec, prompt_tokens: int) -> float:
    """Non-expert FLOPs of one prompt token in one layer: projections, core, router."""
    return (2.0 * attention_params(m) + attention_core_flops_per_token(m, prompt_tokens)
            + 2.0 * router_params(m))


def expert_flops_per_routed_token(m: ModelSpec) -> float:
    """FLOPs of one token copy through one expert: 2 * g*h*f."""
    return 2.0 * expert_params(m)


def prefill_flops_per_token(m: ModelSpec, prompt_tokens: int) -> float:
    """Forward FLOPs of one prompt token over all layers, LM head excluded (it runs once
    per sequence in prefill)."""
    per_layer = (dense_flops_per_token_layer(m, prompt_tokens)
                 + m.top_k * expert_flops_per_routed_token(m))
    return m.num_layers * per_layer


def lm_head_flops_per_sequence(m: ModelSpec) -> float:
    """Logits for the last prompt position: 2 * h * V."""
    return 2.0 * m.hidden_size * m.vocab_size


# ---------------------------------------------------------------- time (§1.4, §1.5)
def compute_s(flops: float, gpu: GpuSpec) -> float:
    """Seconds to execute ``flops`` at the achieved FLOP/s."""
    return flops / (gpu.peak_tflops * 1e12 * gpu.compute_efficiency)


def hbm_s(num_bytes: float, gpu: GpuSpec) -> float:
    """Seconds to stream ``num_bytes`` from HBM at the achieved bandwidth."""
    return num_bytes / (gpu.hbm_bandwidth_gb_s * 1e9 * gpu.hbm_efficiency)


def roofline_s(flops: float, num_bytes: float, gpu: GpuSpec) -> float:
    """max(compute time, memory time) of one operator."""
    return max(compute_s(flops, gpu), hbm_s(num_bytes, gpu))


def link(hw: HardwareSpec, inter_node: bool) -> tuple[float, float]:
    """(bandwidth B/s, latency s) of the intra- or inter-node link of one GPU."""
    if inter_node:
        return hw.inter_node_bandwidth_gb_s * 1e9, hw.inter_node_latency_us * 1e-6
    return hw.intra_node_bandwidth_gb_s * 1e9, hw.intra_node_latency_us * 1e-6


def allreduce_s(num_bytes: float, n: int, bandwidth_b_s: float, latency_s: float) -> float:
    """Ring all-reduce of ``num_bytes`` over ``n`` GPUs: 2(n-1)/n * S / BW + 2(n-1) * alpha."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n * num_bytes / bandwidth_b_s + 2 * (n - 1) * latency_s


def allgather_s(num_bytes: float, n: int, bandwidth_b_s: float, latency_s: float) -> float:
    """Ring all-gather (or reduce-scatter) of ``num_bytes`` in all: (n-1)/n * S / BW."""
    if n <= 1:
        return 0.0
    return (n - 1) / n * num_bytes / bandwidth_b_s + (n - 1) * latency_s


def all_to_all_hot_s(bytes_from_each_peer: float, local_peers: int, remote_peers: int,
                     hw: HardwareSpec) -> float:
    """Receive time of one rank in an all-to-all: intra- and inter-node shares each over
    its own link, the slower sets the time (cost-model decision 5). ``local_peers``
    excludes the rank itself."""
    intra_bw, _ = link(hw, False)
    inter_bw, _ = link(hw, True)
    return max(bytes_from_each_peer * local_peers / intra_bw,
               bytes_from_each_peer * remote_peers / inter_bw)


# ---------------------------------------------------------------- pipeline (§1.6)
def pipeline_makespan(stage_s: list[float], micro_batches: int, p2p_s: float) -> float:
    """Forward makespan of a batch through unbalanced stages:
    sum_j t_j + (m-1) * max_j t_j + (p-1) * t_p2p."""
    return (sum(stage_s) + (micro_batches - 1) * max(stage_s)
            + (len(stage_s) - 1) * p2p_s)
