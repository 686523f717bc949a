"""Integer cost tables of one parallel configuration, shared by the CP-SAT model and the
plan evaluator (so the solver and ``moeopt check`` agree to the nanosecond).

All figures are per GPU and per micro-batch unless named otherwise; times are integer ns
rounded up, memory integer bytes rounded up (``units.py``). A configuration has a prefill
phase and, when the workload generates tokens, a decode phase (one step = every sequence
advances one token); both have the same shape. The MoE time of a layer whose hottest EP
rank receives ``load`` parts of ``LOAD_SCALE`` of the layer's routed tokens is

    moe_ns(load) = max(ceil((F + K) * load / Q), W + ceil((A + K) * load / Q)) + alpha

with F = expert compute, A = expert activation traffic, K = all-to-all and ETP collectives,
all at full load (load = Q), W = reading the rank's expert weights (in decode only the
experts the step's tokens are expected to touch): a roofline over the hottest rank, plus its
communication (cost-model decisions 5 and 9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.costs import exchange, profiled
from optimizer.costs import formulas as cm
from optimizer.costs.layout import (
    Degrees,
    GpuSlot,
    ep_groups,
    etp_groups,
    min_local_peers,
    spans_nodes,
    stage_boundary_inter_node,
    tp_groups,
)
from optimizer.costs.profile import efficiency_of
from optimizer.costs.units import LOAD_SCALE, ceil_div, ceil_int, seconds_to_ns
from optimizer.inputs.schema import DTYPE_BYTES, Instance

ACT_BYTES = exchange.ACT_BYTES  # activations and communicated hidden states are 16-bit


@dataclass(frozen=True)
class LinkFacts:
    """What a layout implies for the links each collective uses."""

    ep_local_peers: int
    ep_remote_peers: int
    tp_inter_node: bool
    etp_inter_node: bool
    pp_inter_node: bool

    @staticmethod
    def of(slots: tuple[GpuSlot, ...]) -> LinkFacts:
        local, remote = min_local_peers(ep_groups(slots))
        return LinkFacts(local, remote, spans_nodes(tp_groups(slots)),
                         spans_nodes(etp_groups(slots)), stage_boundary_inter_node(slots))

    @staticmethod
    def of_megatron(deg: Degrees, gpus_per_node: int) -> LinkFacts:
        """``LinkFacts.of(megatron_layout(deg, gpus_per_node))`` by array operations over
        the ranks (the layout's formulas in closed form; no GpuSlot per GPU)."""
        rank = np.arange(deg.num_gpus, dtype=np.int64)
        per_stage = deg.gpus_per_stage
        stage, in_stage = np.divmod(rank, per_stage)
        node = rank // gpus_per_node
        dp_rank = in_stage // deg.tp
        rest, etp_rank = np.divmod(in_stage, deg.etp)
        edp_rank, ep_rank = np.divmod(rest, deg.ep)
        ep_group = (stage * deg.etp + etp_rank) * (per_stage // max(1, deg.etp * deg.ep) + 1) + edp_rank
        # every EP group has ep members: the worst member has the fewest peers on its node
        _, on_node = np.unique(ep_group * (node[-1] + 1) + node, return_counts=True)
        fewest = int(on_node.min()) if deg.num_gpus else 1
        tp_group = stage * deg.dp + dp_rank
        etp_group = (stage * deg.ep + ep_rank) * (per_stage + 1) + edp_rank
        boundary = node[: deg.num_gpus - per_stage] != node[per_stage:]
        return LinkFacts(fewest - 1, deg.ep - fewest, _spans(tp_group, node), _spans(etp_group, node),
                         bool(boundary.any()))


def _spans(group: np.ndarray, node: np.ndarray) -> bool:
    """True when some group (ids per rank) has ranks on more than one node."""
    return len(np.unique(group * (node[-1] + 1) + node)) > len(np.unique(group))


@dataclass(frozen=True)
class MemoryParts:
    """Per-GPU bytes: fixed parts, and weights and KV cache per layer."""

    activations: int
    buffers: int
    layer_weights: tuple[int, ...]
    layer_kv: tuple[int, ...]
    embedding: int
    head: int

    def stage_weights(self, layers, first: bool, last: bool) -> int:
        return (sum(self.layer_weights[l] for l in layers) + (self.embedding if first else 0)
                + (self.head if last else 0))

    def stage_kv(self, layers) -> int:
        return sum(self.layer_kv[l] for l in layers)

    def stage_total(self, layers, first: bool, last: bool) -> int:
        """Bytes on one GPU of a stage holding ``layers``."""
        return (self.activations + self.buffers + self.stage_weights(layers, first, last)
                + self.stage_kv(layers))


@dataclass(frozen=True)
class PhaseCosts:
    """Integer time coefficients of one phase (prefill, or one decode step), ns."""

    layer_dense_ns: tuple[int, ...]  # per layer: attention, router, shared/dense FFN, TP comm
    tp_comm_ns: tuple[int, ...]  # per layer: the TP all-reduce part of layer_dense_ns
    moe_compute_full_ns: int
    moe_weights_ns: int
    moe_act_full_ns: int
    moe_comm_full_ns: int
    moe_latency_ns: int
    embed_ns: int
    head_ns: int
    p2p_ns: int
    ep: int

    def moe_ns(self, load: int) -> int:
        """Hot-rank MoE time of one layer (compute roofline + communication), ns."""
        comm = self.moe_comm_full_ns
        compute_bound = ceil_div((self.moe_compute_full_ns + comm) * load, LOAD_SCALE)
        memory_bound = self.moe_weights_ns + ceil_div((self.moe_act_full_ns + comm) * load,
                                                      LOAD_SCALE)
        return max(compute_bound, memory_bound) + self.moe_latency_ns

    def moe_total_ns(self, loads: np.ndarray) -> int:
        """sum(moe_ns(x) for x in loads) for an int64 array of loads, vectorised (the same
        integer arithmetic), ns."""
        comm = self.moe_comm_full_ns
        compute_bound = -((-(self.moe_compute_full_ns + comm) * loads) // LOAD_SCALE)
        memory_bound = self.moe_weights_ns - ((-(self.moe_act_full_ns + comm) * loads) // LOAD_SCALE)
        return int(np.maximum(compute_bound, memory_bound).sum()) + len(loads) * self.moe_latency_ns

    def moe_comm_ns(self, load: int) -> int:
        """The communication part of ``moe_ns``, ns."""
        return ceil_div(self.moe_comm_full_ns * load, LOAD_SCALE) + self.moe_latency_ns

    @property
    def moe_balanced_compute_ns(self) -> int:
        """Expert time of a perfectly balanced layer (every rank at the mean), ns."""
        return max(ceil_div(self.moe_compute_full_ns, self.ep),
                   self.moe_weights_ns + ceil_div(self.moe_act_full_ns, self.ep))

    def useful_pass_ns(self, num_moe_layers: int) -> int:
        """Work of one micro-batch through every stage at perfect expert balance, without
        TP all-reduces (the part of a pass that is not lost to anything), ns."""
        return (sum(self.layer_dense_ns) - sum(self.tp_comm_ns)
                + num_moe_layers * self.moe_balanced_compute_ns + self.embed_ns + self.head_ns)

    def stage_ns(self, layers, hot: dict[int, int], first: bool, last: bool) -> int:
        """One micro-batch through a stage holding ``layers``; ``hot`` maps each MoE layer
        to its hot load."""
        return (sum(self.layer_dense_ns[l] for l in layers)
                + sum(self.moe_ns(hot[l]) for l in layers if l in hot)
                + (self.embed_ns if first else 0) + (self.head_ns if last else 0))


@dataclass(frozen=True)
class StageCosts:
    """Everything CP-SAT and the evaluator need about one configuration."""

    deg: Degrees
    seqs_per_replica: int
    seqs_per_micro_batch: int
    decode_steps: int
    prefill: PhaseCosts
    decode: PhaseCosts | None
    memory: MemoryParts

    @property
    def phases(self) -> list[tuple[PhaseCosts, int]]:
        """(phase, weight): prefill once, each decode step ``decode_steps`` times."""
        out = [(self.prefill, 1)]
        if self.decode is not None:
            out.append((self.decode, self.decode_steps))
        return out


def seqs_per_replica(inst: Instance, dp: int) -> int:
    """Sequences the busiest attention-DP replica holds."""
    return ceil_div(inst.workload.batch_sequences, dp)


def decode_context(inst: Instance) -> float:
    """Mean context length over the decode steps: s + (D + 1) / 2."""
    return inst.workload.prompt_tokens + (inst.workload.output_tokens + 1) / 2


def _dense_layer(inst: Instance, deg: Degrees, layer: int, tokens: int, decode: bool,
                 facts: LinkFacts) -> tuple[int, int]:
    """``dense_layer_ns`` of a static-batch phase. Prefill: ``tokens`` prompt tokens; decode:
    ``tokens`` tokens at the mean decode context."""
    m = inst.model
    if decode:
        ctx = cm.kv_tokens(m, layer, int(decode_context(inst)))
        per_token = cm.decode_dense_flops_per_token_layer(m, ctx, layer)
        kv_read = tokens * ctx * cm.kv_bytes_per_token_layer(m, deg.tp)
    else:
        per_token = cm.dense_flops_per_token_layer(m, inst.workload.prompt_tokens, layer)
        kv_read = tokens * cm.kv_bytes_per_token_layer(m, deg.tp)  # written once
    return dense_layer_ns(inst, deg, layer, tokens, tokens * per_token, kv_read, facts,
                          tokens if decode else 0)


def dense_layer_ns(inst: Instance, deg: Degrees, layer: int, tokens: int, flops: float,
                   kv_bytes: float, facts: LinkFacts, decode_tokens: int = 0) -> tuple[int, int]:
    """(attention, router, shared or dense FFN roofline + TP all-reduces, the all-reduces
    alone) of one layer for ``tokens`` tokens, ns. ``flops``: their non-routed FLOPs over
    all heads; ``kv_bytes``: KV cache bytes one TP rank reads or writes; ``decode_tokens``:
    how many tokens are decode requests (a hardware profile picks its attention table by it).
    Memoised in ``efficiency_of(inst)`` (per GPU, model and profile) on everything else it
    reads: the TP degree and link, and the layer's kind (MoE or not, sliding or not)."""
    m, eff = inst.model, efficiency_of(inst)
    bandwidth, latency = cm.link(inst.hardware, facts.tp_inter_node)
    key = ("dense_layer_ns", deg.tp, facts.tp_inter_node, bandwidth, latency, cm.is_moe_layer(m, layer),
           m.is_sliding(layer), tokens, flops, kv_bytes, decode_tokens)
    return eff._cached(key, lambda: _dense_layer_ns(inst, deg, layer, tokens, flops, kv_bytes, facts, decode_tokens))


def _dense_layer_ns(inst: Instance, deg: Degrees, layer: int, tokens: int, flops: float,
                    kv_bytes: float, facts: LinkFacts, decode_tokens: int) -> tuple[int, int]:
    eff = efficiency_of(inst)
    m, gpu, hw = inst.model, inst.hardware.gpu, inst.hardware
    b = DTYPE_BYTES[m.weight_dtype]
    moe = cm.is_moe_layer(m, layer)
    ffn_params = (cm.shared_expert_params(m) if moe else cm.dense_ffn_params(m))
    flops = flops / deg.tp  # every TP rank works on its share of heads / tokens
    qkv_width = (m.num_attention_heads + 2 * m.num_kv_heads) * m.head_dim / deg.tp
    num_bytes = ((cm.attention_params(m) + ffn_params) / deg.tp * b + kv_bytes
                 + tokens * ACT_BYTES * (2 * m.hidden_size + qkv_width))
    bw, lat = cm.link(hw, facts.tp_inter_node)
    reductions = 1 if moe else 2  # attention output; a dense FFN output too
    reduce_bytes = tokens * m.hidden_size * ACT_BYTES
    measured = None if eff.flat else eff.collective(
        "all_reduce", "inter" if facts.tp_inter_node else "intra", deg.tp, reduce_bytes)
    tp_comm = seconds_to_ns(reductions * cm.allreduce_s(reduce_bytes, deg.tp, bw, lat, measured))
    if eff.flat:
        return seconds_to_ns(cm.roofline_s(flops, num_bytes, gpu)) + tp_comm, tp_comm
    parts = profiled.dense_parts_s(inst, deg.tp, layer, tokens, flops * deg.tp, kv_bytes,
                                   decode_tokens, eff)
    return seconds_to_ns(sum(parts.values())) + tp_comm, tp_comm


def moe_terms(inst: Instance, deg: Degrees, tokens: int, touched_only: bool,
              facts: LinkFacts) -> tuple[int, ...]:
    """(F, W, A, K, alpha) of ``PhaseCosts`` in ns for ``tokens`` tokens per attention
    replica; ``touched_only``: W reads only the experts they are expected to reach."""
    m, gpu, hw = inst.model, inst.hardware.gpu, inst.hardware
    eff = efficiency_of(inst)
    full_copies = tokens * m.top_k * deg.etp * deg.ep / deg.tp  # routed rows of one EP group
    eta = None if eff.flat else profiled.expert_eta(inst, full_copies, deg.etp, deg.ep, eff)
    dtype = profiled.expert_dtype(inst)
    f_ns = seconds_to_ns(cm.compute_s(full_copies * cm.expert_flops_per_routed_token(m) / deg.etp, gpu,
                                      eff, eta, dtype))
    touched = m.num_experts // deg.ep
    if touched_only:  # few tokens: only the experts they are expected to reach are read
        touched *= cm.expected_experts_hit_fraction(m, full_copies / m.top_k)
    w_ns = seconds_to_ns(cm.hbm_s(touched * cm.expert_bytes(m) / deg.etp, gpu, eta))
    a_ns = seconds_to_ns(cm.hbm_s(full_copies * ACT_BYTES * 2 * (m.hidden_size + m.expert_ffn_size / deg.etp),
                                  gpu, eta))
    # the token exchange (hardware.moe_token_exchange): a load-scaled and a fixed part
    a2a, exchange_fixed = exchange.token_exchange_s(inst, deg.ep, tokens / deg.tp, facts.ep_local_peers,
                                                    facts.ep_remote_peers)
    etp_bw, etp_lat = cm.link(hw, facts.etp_inter_node)
    gather_bytes = full_copies * m.hidden_size * ACT_BYTES
    gather_measured = None if eff.flat else eff.collective(
        "all_gather", "inter" if facts.etp_inter_node else "intra", deg.etp, gather_bytes)
    gathers = 2 * cm.allgather_s(gather_bytes, deg.etp, etp_bw, 0.0, gather_measured)
    k_ns = seconds_to_ns(a2a + gathers)
    alpha = exchange_fixed + (2 * (deg.etp - 1) * etp_lat)
    return f_ns, w_ns, a_ns, k_ns, seconds_to_ns(alpha)


def _layer_kinds(inst: Instance) -> list[tuple[bool, bool]]:
    """Per layer: (MoE?, sliding window?), everything ``_dense_layer`` reads of the layer."""
    m = inst.model
    moe = set(range(m.num_layers)) if m.moe_layers is None else set(m.moe_layers)
    return [(l in moe, m.is_sliding(l)) for l in range(m.num_layers)]


def _dense_layers(inst: Instance, deg: Degrees, tokens: int, decode: bool, facts: LinkFacts,
                  cache: dict | None) -> list[tuple[int, int]]:
    """``_dense_layer`` of every layer, computed once per kind of layer (MoE or dense,
    sliding or not) and, with ``cache``, once per (TP degree, tokens, phase, TP link) over
    every configuration of a build; the same integers as layer by layer."""
    return _per_kind(inst, {} if cache is None else cache, ("dense", deg.tp, tokens, decode, facts.tp_inter_node),
                     lambda l: _dense_layer(inst, deg, l, tokens, decode, facts))


def _phase(inst: Instance, deg: Degrees, tokens: int, seqs: int, decode: bool,
           facts: LinkFacts, cache: dict | None = None) -> PhaseCosts:
    """Costs of one phase: ``tokens`` per micro-batch (prefill) or per decode step. With
    ``cache``, memoized under everything the phase reads of the configuration (TP, EP, ETP,
    whether there are several stages, tokens, sequences, phase, link facts)."""
    logits = tokens if decode else seqs  # prefill: the last position of each sequence
    key = ("phase", deg.tp, deg.ep, deg.etp, deg.pp > 1, tokens, logits, decode, facts)
    phase = None if cache is None else cache.get(key)
    if phase is None:
        dense = _dense_layers(inst, deg, tokens, decode, facts, cache)
        phase = assemble_phase(inst, deg, facts, dense, _moe_terms_cached(inst, deg, tokens, decode, facts, cache),
                               tokens, logits)
        if cache is not None:
            cache[key] = phase
    return phase


def _moe_terms_cached(inst: Instance, deg: Degrees, tokens: int, touched_only: bool, facts: LinkFacts,
                      cache: dict | None) -> tuple[int, ...]:
    """``moe_terms``, memoized in ``cache`` under everything it reads of the configuration
    (TP, EP, ETP, tokens, phase, EP peers and ETP link): configurations differing only in PP,
    DP or micro-batch count share them."""
    if cache is None:
        return moe_terms(inst, deg, tokens, touched_only, facts)
    key = ("moe", deg.tp, deg.ep, deg.etp, tokens, touched_only, facts.ep_local_peers,
           facts.ep_remote_peers, facts.etp_inter_node)
    terms = cache.get(key)
    if terms is None:
        terms = cache[key] = moe_terms(inst, deg, tokens, touched_only, facts)
    return terms


def assemble_phase(inst: Instance, deg: Degrees, facts: LinkFacts, dense: list[tuple[int, int]],
                   moe: tuple[int, ...], tokens: int, logits: int) -> PhaseCosts:
    """``PhaseCosts`` from per-layer ``dense_layer_ns`` pairs and ``moe_terms``, adding the
    embedding, the LM head over ``logits`` positions and the pipeline send of ``tokens``."""
    f_ns, w_ns, a_ns, k_ns, alpha_ns = moe
    embed_ns, head_ns, p2p_ns = edge_costs(inst, deg, facts, tokens, logits)
    return PhaseCosts(tuple(d for d, _ in dense), tuple(c for _, c in dense), f_ns, w_ns, a_ns,
                      k_ns, alpha_ns, embed_ns, head_ns, p2p_ns, deg.ep)


def edge_costs(inst: Instance, deg: Degrees, facts: LinkFacts, tokens: int,
               logits: int) -> tuple[int, int, int]:
    """(embedding, LM head over ``logits`` positions, pipeline send of ``tokens``), ns."""
    m, hw, gpu = inst.model, inst.hardware, inst.hardware.gpu
    hidden_bytes = tokens * m.hidden_size * ACT_BYTES
    tp_bw, tp_lat = cm.link(hw, facts.tp_inter_node)
    embed_s = cm.hbm_s(hidden_bytes, gpu) + cm.allreduce_s(hidden_bytes, deg.tp, tp_bw, tp_lat)
    eff = efficiency_of(inst)
    dtype = profiled.gemm_dtype(cm.unquantized_dtype(m))  # the head stays 16-bit in FP8 checkpoints
    head_eta = None if eff.flat else eff.gemm_eta(dtype, logits, m.vocab_size / deg.tp, m.hidden_size)
    head_s = cm.roofline_s(logits * cm.lm_head_flops_per_sequence(m) / deg.tp,
                           cm.embedding_params(m) / deg.tp * DTYPE_BYTES[cm.unquantized_dtype(m)], gpu,
                           eff, head_eta, dtype)
    pp_bw, pp_lat = cm.link(hw, facts.pp_inter_node)
    p2p_s = hidden_bytes / deg.tp / pp_bw + pp_lat if deg.pp > 1 else 0.0
    return seconds_to_ns(embed_s), seconds_to_ns(head_s), seconds_to_ns(p2p_s)


def _layer_weight_bytes(inst: Instance, deg: Degrees, layer: int) -> float:
    """Weights of one layer on one GPU (attention and dense parts split by TP, routed
    experts E/EP per rank split ETP ways, router and norms replicated; linear projections
    in the weight type, the rest in ``formulas.unquantized_dtype``)."""
    m = inst.model
    b, b16 = DTYPE_BYTES[m.weight_dtype], DTYPE_BYTES[cm.unquantized_dtype(m)]
    linear = cm.quantized_params_per_layer(m, layer)
    split = cm.attention_params(m) + (cm.shared_expert_params(m) if cm.is_moe_layer(m, layer)
                                      else cm.dense_ffn_params(m))  # TP-split weights
    common = (linear * b + (split - linear) * b16) / deg.tp + cm.norm_params_per_layer(m) * b16
    if not cm.is_moe_layer(m, layer):
        return common
    return common + cm.router_params(m) * b16 + m.num_experts // deg.ep * cm.expert_bytes(m) / deg.etp


def _per_kind(inst: Instance, cache: dict, key: tuple, of_layer) -> tuple[int, ...]:
    """``of_layer(l)`` for every layer, evaluated once per kind of layer (``_layer_kinds``)
    and memoized in ``cache`` under ``key``."""
    rows = cache.get(key)
    if rows is None:
        kinds = cache.get("kinds")
        if kinds is None:
            kinds = cache["kinds"] = _layer_kinds(inst)
        first: dict = {}
        for l, kind in enumerate(kinds):
            first.setdefault(kind, l)
        by_kind = {kind: of_layer(l) for kind, l in first.items()}
        rows = cache[key] = tuple(by_kind[kind] for kind in kinds)
    return rows


def _memory(inst: Instance, deg: Degrees, seqs: int, tokens: int, cache: dict | None = None) -> MemoryParts:
    """Per-GPU memory parts (docs/cost-model.md §1.3), bytes; KV at the end of the batch. Per-layer KV
    and weights are computed once per kind of layer (and shared through ``cache``)."""
    m, wl = inst.model, inst.workload
    cache = {} if cache is None else cache
    final_context = wl.prompt_tokens + wl.output_tokens
    layer_kv = _per_kind(inst, cache, ("kv", seqs, deg.tp), lambda l: ceil_int(
        seqs * cm.kv_tokens(m, l, final_context) * cm.kv_bytes_per_token_layer(m, deg.tp)))
    layer_weights = _per_kind(inst, cache, ("weights", deg.tp, deg.ep, deg.etp),
                              lambda l: ceil_int(_layer_weight_bytes(inst, deg, l)))
    return memory_parts(inst, deg, tokens, layer_kv, layer_weights)


def memory_parts(inst: Instance, deg: Degrees, tokens: int, layer_kv: list[float] | tuple[int, ...],
                 layer_weights: tuple[int, ...] | None = None) -> MemoryParts:
    """Per-GPU memory parts, bytes: activations and buffers of ``tokens`` tokens per
    micro-batch (a static batch's, or one engine step's), weights (``layer_weights`` when
    already computed), and ``layer_kv``."""
    m, hw, wl = inst.model, inst.hardware, inst.workload
    h = m.hidden_size
    mean_copies = tokens * m.top_k * deg.etp / deg.tp  # routed rows one GPU computes
    qkv_width = (m.num_attention_heads + 2 * m.num_kv_heads) * m.head_dim / deg.tp
    inter = (m.ffn_matrices - 1) * max(m.expert_ffn_size / deg.etp,
                                        (m.shared_expert_ffn_size + m.dense_ffn_size) / deg.tp)
    acts = (tokens * ACT_BYTES * (2 * h + qkv_width)
            + wl.moe_buffer_factor * mean_copies * ACT_BYTES * (h + inter))
    buffers = (hw.nccl_buffer_gb + hw.runtime_reserve_gb) * 1e9
    if deg.ep > 1 and hw.moe_token_exchange == "allgather":
        # the gathered hidden states of the EP group and the experts' outputs before the
        # reduce-scatter, each EP x T x h x a
        buffers += 2 * exchange.gathered_bytes(inst, deg.ep, tokens / deg.tp)
    elif deg.ep > 1:  # all-to-all send and receive: a GPU's own token share, before ETP gathers
        buffers += (1 + wl.moe_buffer_factor) * tokens / deg.tp * m.top_k * h * ACT_BYTES
    if deg.pp > 1:
        buffers += tokens * h * ACT_BYTES / deg.tp
    b16 = DTYPE_BYTES[cm.unquantized_dtype(m)]  # embedding, head and final norm stay 16-bit
    head = 0.0 if (m.tie_word_embeddings and deg.pp == 1) else cm.embedding_params(m) / deg.tp * b16
    head += (cm.head_params(m) - (0 if m.tie_word_embeddings else cm.embedding_params(m))) * b16
    return MemoryParts(ceil_int(acts), ceil_int(buffers),
                       layer_weights if layer_weights is not None else
                       tuple(ceil_int(_layer_weight_bytes(inst, deg, l)) for l in range(m.num_layers)),
                       tuple(ceil_int(x) for x in layer_kv),
                       ceil_int(cm.embedding_params(m) / deg.tp * b16),
                       ceil_int(head + cm.norm_params_per_layer(m) / 2 * b16))


def stage_costs(inst: Instance, deg: Degrees, facts: LinkFacts, cache: dict | None = None) -> StageCosts:
    """All integer coefficients of configuration ``deg`` under link facts ``facts``.
    ``cache`` (a dict, empty at first) shares per-layer terms between the configurations
    of one instance: pass the same dict for every configuration of one build only."""
    wl = inst.workload
    seqs = seqs_per_replica(inst, deg.dp)
    mb_seqs = ceil_div(seqs, deg.micro_batches)
    tokens = mb_seqs * wl.prompt_tokens
    prefill = _phase(inst, deg, tokens, mb_seqs, False, facts, cache)
    decode = _phase(inst, deg, mb_seqs, mb_seqs, True, facts, cache) if wl.output_tokens else None
    return StageCosts(deg, seqs, mb_seqs, wl.output_tokens, prefill, decode,
                      _memory(inst, deg, seqs, tokens, cache))
