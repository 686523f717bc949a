"""Where a hardware profile enters the cost tables (docs/calibration.md §C3).

Each function returns what ``tables`` needs for one operator group, looked up once per
configuration and phase (so the CP-SAT coefficients stay constants): a non-routed layer
split into its linear GEMMs and its attention core, the routed-expert efficiency, the
collectives' measured latency and bandwidth efficiency. With a flat profile (or none)
callers keep the flat formulas; these functions are only called when ``eff.flat`` is False.
"""

from __future__ import annotations

from optimizer.costs import formulas as cm
from optimizer.inputs.schema import DTYPE_BYTES, Instance

LL_MAX_TOKENS_PER_RANK = 128  # DeepEP low-latency kernels serve decode batches up to this size


def gemm_dtype(dtype: str) -> str:
    return {"fp8": "fp8", "mxfp4": "mxfp4"}.get(dtype, "bf16")


def attention_kind(inst: Instance) -> str:
    m = inst.model
    if m.attention == "mla":
        return "mla"
    return "mha" if m.num_kv_heads == m.num_attention_heads else "gqa"


def dense_parts_s(inst: Instance, tp: int, layer: int, tokens: int, flops: float,
                  kv_bytes: float, decode_tokens: int, eff) -> dict[str, float]:
    """Seconds of one non-routed layer on one TP rank, by operator: ``linear`` (attention
    projections, router, shared expert or dense FFN as one GEMM of the same FLOPs with
    k = h), ``attention`` (the core: scores + context and the KV traffic), ``elementwise``
    (norms, residual adds, the non-routed FFN's activation gate). ``flops``: all
    non-routed FLOPs of the ``tokens`` over all heads; ``decode_tokens``: how many of the
    tokens are decode requests (the phase with the majority sets the attention table).
    Layers of one kind (MoE or dense, sliding or not) share the answer (memoised in ``eff``)."""
    m = inst.model
    moe = cm.is_moe_layer(m, layer)
    sliding = m.is_sliding(layer)
    key = ("dense_parts", tp, moe, sliding, tokens, flops, kv_bytes, decode_tokens)
    return eff._cached(key, lambda: _dense_parts_s(inst, tp, layer, moe, sliding, tokens, flops,
                                                   kv_bytes, decode_tokens, eff))


def _dense_parts_s(inst, tp, layer, moe, sliding, tokens, flops, kv_bytes, decode_tokens, eff):
    m = inst.model
    b = DTYPE_BYTES[m.weight_dtype]
    linear_flops = tokens * cm.linear_flops_per_token_layer(m, layer)
    core_flops = max(flops - linear_flops, 0.0) / tp
    ffn = cm.shared_expert_params(m) if moe else cm.dense_ffn_params(m)
    weights = cm.attention_params(m) + ffn + (cm.router_params(m) if moe else 0)
    qkv_width = (m.num_attention_heads + 2 * m.num_kv_heads) * m.head_dim / tp
    act_bytes = tokens * 2 * (2 * m.hidden_size + qkv_width)
    lin_bytes = (cm.attention_params(m) + ffn) / tp * b + act_bytes
    dtype = gemm_dtype(m.weight_dtype)
    n = max(weights / (m.hidden_size * tp), 1.0)
    eta = eff.gemm_eta(dtype, tokens, n, m.hidden_size)
    linear_s = cm.roofline_s(linear_flops / tp, lin_bytes, inst.hardware.gpu, eff, eta, dtype)
    decode = 2 * decode_tokens > tokens
    kv_per_token = cm.kv_bytes_per_token_layer(m, tp)
    if decode:  # the KV tokens the step reads (sequences x context)
        context = kv_bytes / max(kv_per_token, 1e-9)
    else:
        context = 2 * core_flops * tp / max(tokens * cm.attention_core_flops_per_key(m), 1e-9)
    eta_a = eff.attention_eta(attention_kind(inst), sliding, "decode" if decode else "prefill",
                              context)
    attention_s = cm.roofline_s(core_flops, kv_bytes, inst.hardware.gpu, eff, eta_a, "bf16")
    # no table times the norms and the activation gate: streamed at the flat HBM efficiency
    elementwise_s = cm.hbm_s(tokens * cm.elementwise_bytes_per_token_layer(m, layer, tp), inst.hardware.gpu)
    return {"linear": linear_s, "attention": attention_s, "elementwise": elementwise_s}


def expert_eta(inst: Instance, routed_rows: float, etp: int, ep: int, eff) -> float | None:
    """Grouped-GEMM efficiency of the routed experts when an EP group of ``ep`` ranks computes
    ``routed_rows`` token copies (rows / E tokens per expert), expert width f / ETP, E / EP
    experts per GPU."""
    m = inst.model
    dtype = gemm_dtype(m.expert_weight_dtype or m.weight_dtype)
    return eff.grouped_eta(dtype, routed_rows / etp / m.num_experts, m.hidden_size,
                           m.expert_ffn_size / etp, m.num_experts // ep)


def expert_dtype(inst: Instance) -> str:
    m = inst.model
    return gemm_dtype(m.expert_weight_dtype or m.weight_dtype)


def a2a_family(tokens_per_rank: float) -> str:
    """DeepEP's low-latency kernels for small (decode) batches, the normal ones otherwise."""
    return "deepep_ll" if tokens_per_rank <= LL_MAX_TOKENS_PER_RANK else "deepep_normal"


def a2a_bytes(inst: Instance, tokens_per_rank: float, ep: int, local_peers: int,
              remote_peers: int) -> tuple[float, float]:
    """(NVLink, RDMA) bytes one rank receives in one direction of the DeepEP kernel family
    ``a2a_family`` picks for ``tokens_per_rank`` (docs/cost-model.md §1.5): low-latency sends
    every (token, expert) pair, T*k*h*a/EP from each peer; normal sends a token once per
    destination rank over NVLink and once per destination node over RDMA
    (``formulas.deepep_normal_bytes``)."""
    m = inst.model
    if a2a_family(tokens_per_rank) == "deepep_normal":
        nvlink, rdma = cm.deepep_normal_bytes(tokens_per_rank, m.hidden_size, 2, m.num_experts,
                                              m.top_k, ep, local_peers + 1)
        return nvlink, rdma if remote_peers else 0.0
    per_peer = tokens_per_rank * m.top_k * m.hidden_size * 2 / ep
    return per_peer * local_peers, per_peer * remote_peers


def a2a_profiled_s(inst: Instance, eff, tokens_per_rank: float, ep: int, local_peers: int,
                   remote_peers: int) -> tuple[float, float] | None:
    """(time of one all-to-all direction at full load, s; per-message latency, s) from the
    profile's kernel family for this batch size, or None when the profile has no table.
    "Full load" is the cost tables' convention: the hot rank's time is this times its share
    of the routed rows (ep x the balanced time). Each link's bytes (``a2a_bytes``) are
    divided by that link's measured efficiency; a profile without inter-node measurements
    lends the family's intra-node curve to the inter-node link (docs/calibration.md)."""
    hw = inst.hardware
    family = a2a_family(tokens_per_rank)
    nvlink, rdma = a2a_bytes(inst, tokens_per_rank, ep, local_peers, remote_peers)
    intra = eff.collective("all_to_all", "intra", ep, nvlink, family)
    inter = None
    if rdma:
        inter = (eff.collective("all_to_all", "inter", ep, rdma, family)
                 or eff.collective("all_to_all", "intra", ep, rdma, family))
    if intra is None and inter is None:
        return None
    intra_bw, _ = cm.link(hw, False)
    inter_bw, _ = cm.link(hw, True)
    balanced = max(nvlink / (intra_bw * (intra[1] if intra else 1.0)),
                   rdma / (inter_bw * (inter[1] if inter else 1.0)))
    latency = max(x[0] for x in (intra, inter) if x is not None)
    return ep * balanced, latency
