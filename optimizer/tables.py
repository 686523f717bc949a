"""Integer cost tables of one parallel configuration, shared by the CP-SAT model and the
plan evaluator (so the solver and ``moeopt check`` agree to the nanosecond).

All figures are per GPU and per micro-batch unless named otherwise; times are integer ns
rounded up, memory integer bytes rounded up (``units.py``). The MoE time of a layer whose
hottest EP rank receives ``load`` parts of ``LOAD_SCALE`` of the layer's routed tokens is

    moe_ns(load) = max(ceil((F + K) * load / Q), W + ceil((A + K) * load / Q)) + alpha

with F = expert compute, A = expert activation traffic, K = all-to-all and ETP collectives,
all at full load (load = Q), W = reading the rank's expert weights: a roofline over the
hottest rank, plus its communication (cost-model decisions 5 and 9).
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer import costmodel as cm
from optimizer.layout import (Degrees, GpuSlot, ep_groups, etp_groups, min_local_peers,
                              spans_nodes, stage_boundary_inter_node, tp_groups)
from optimizer.schema import DTYPE_BYTES, Instance
from optimizer.units import LOAD_SCALE, ceil_div, ceil_int, seconds_to_ns

ACT_BYTES = 2  # activations and communicated hidden states are 16-bit


@dataclass(frozen=True)
class LinkFacts:
    """What a layout implies for the links each collective uses."""

    ep_local_peers: int
    ep_remote_peers: int
    tp_inter_node: bool
    etp_inter_node: bool
    pp_inter_node: bool

    @staticmethod
    def of(slots: tuple[GpuSlot, ...]) -> "LinkFacts":
        local, remote = min_local_peers(ep_groups(slots))
        return LinkFacts(local, remote, spans_nodes(tp_groups(slots)),
                         spans_nodes(etp_groups(slots)), stage_boundary_inter_node(slots))


@dataclass(frozen=True)
class MemoryParts:
    """Per-GPU bytes: fixed parts and per-layer parts (weights, KV)."""

    activations: int
    buffers: int
    layer_weights: int
    layer_kv: int
    embedding: int
    head: int

    def stage_total(self, num_layers: int, first: bool, last: bool) -> int:
        return (self.activations + self.buffers
                + num_layers * (self.layer_weights + self.layer_kv)
                + (self.embedding if first else 0) + (self.head if last else 0))


@dataclass(frozen=True)
class StageCosts:
    """Integer cost coefficients of one configuration (ns per micro-batch, bytes)."""

    deg: Degrees
    seqs_per_replica: int
    seqs_per_micro_batch: int
    layer_dense_ns: int
    tp_comm_ns: int
    moe_compute_full_ns: int
    moe_weights_ns: int
    moe_act_full_ns: int
    moe_comm_full_ns: int
    moe_latency_ns: int
    embed_ns: int
    head_ns: int
    p2p_ns: int
    memory: MemoryParts

    def moe_ns(self, load: int) -> int:
        """Hot-rank MoE time of one layer (compute roofline + communication), ns."""
        comm = self.moe_comm_full_ns
        compute_bound = ceil_div((self.moe_compute_full_ns + comm) * load, LOAD_SCALE)
        memory_bound = self.moe_weights_ns + ceil_div((self.moe_act_full_ns + comm) * load,
                                                      LOAD_SCALE)
        return max(compute_bound, memory_bound) + self.moe_latency_ns

    def moe_comm_ns(self, load: int) -> int:
        """The communication part of ``moe_ns``, ns."""
        return ceil_div(self.moe_comm_full_ns * load, LOAD_SCALE) + self.moe_latency_ns

    @property
    def moe_balanced_compute_ns(self) -> int:
        """Expert time of a perfectly balanced layer (every rank at the mean), ns."""
        ep = self.deg.ep
        return max(ceil_div(self.moe_compute_full_ns, ep),
                   self.moe_weights_ns + ceil_div(self.moe_act_full_ns, ep))

    def stage_ns(self, hot_loads: list[int], first: bool, last: bool) -> int:
        """One micro-batch through one stage whose MoE layers have these hot loads."""
        return (len(hot_loads) * self.layer_dense_ns + sum(self.moe_ns(x) for x in hot_loads)
                + (self.embed_ns if first else 0) + (self.head_ns if last else 0))


def seqs_per_replica(inst: Instance, dp: int) -> int:
    """Sequences the busiest attention-DP replica holds."""
    return ceil_div(inst.workload.batch_sequences, dp)


def _dense_layer(inst: Instance, deg: Degrees, tokens: int, facts: LinkFacts) -> tuple[int, int]:
    """(attention + router roofline + TP all-reduce, the all-reduce alone) per layer, ns."""
    m, gpu, hw = inst.model, inst.hardware.gpu, inst.hardware
    s = inst.workload.prompt_tokens
    flops = tokens * (2.0 * cm.attention_params(m) + cm.attention_core_flops_per_token(m, s)) / deg.tp
    flops += tokens / deg.tp * 2.0 * cm.router_params(m)
    qkv_width = (m.num_attention_heads + 2 * m.num_kv_heads) * m.head_dim / deg.tp
    num_bytes = (cm.attention_params(m) / deg.tp * DTYPE_BYTES[m.weight_dtype]
                 + tokens * ACT_BYTES * (2 * m.hidden_size + qkv_width)
                 + tokens * cm.kv_bytes_per_token_layer(m, deg.tp))
    bw, lat = cm.link(hw, facts.tp_inter_node)
    tp_comm = seconds_to_ns(cm.allreduce_s(tokens * m.hidden_size * ACT_BYTES, deg.tp, bw, lat))
    return seconds_to_ns(cm.roofline_s(flops, num_bytes, gpu)) + tp_comm, tp_comm


def _moe_terms(inst: Instance, deg: Degrees, tokens: int, facts: LinkFacts) -> tuple[int, ...]:
    """(F, W, A, K, alpha) of ``StageCosts`` in ns."""
    m, gpu, hw = inst.model, inst.hardware.gpu, inst.hardware
    full_copies = tokens * m.top_k * deg.etp * deg.ep / deg.tp  # routed rows of one EP group
    f_ns = seconds_to_ns(cm.compute_s(full_copies * cm.expert_flops_per_routed_token(m) / deg.etp, gpu))
    rank_weights = m.num_experts // deg.ep * cm.expert_params(m) / deg.etp * DTYPE_BYTES[m.weight_dtype]
    w_ns = seconds_to_ns(cm.hbm_s(rank_weights, gpu))
    a_ns = seconds_to_ns(cm.hbm_s(full_copies * ACT_BYTES * 2 * (m.hidden_size + m.expert_ffn_size / deg.etp), gpu))
    from_each_peer = tokens / deg.tp * m.top_k * m.hidden_size * ACT_BYTES
    a2a = 2 * cm.all_to_all_hot_s(from_each_peer, facts.ep_local_peers, facts.ep_remote_peers, hw)
    etp_bw, etp_lat = cm.link(hw, facts.etp_inter_node)
    gathers = 2 * cm.allgather_s(full_copies * m.hidden_size * ACT_BYTES, deg.etp, etp_bw, 0.0)
    k_ns = seconds_to_ns(a2a + gathers)
    _, ep_lat = cm.link(hw, facts.ep_remote_peers > 0)
    alpha = (2 * ep_lat if deg.ep > 1 else 0.0) + (2 * (deg.etp - 1) * etp_lat)
    return f_ns, w_ns, a_ns, k_ns, seconds_to_ns(alpha)


def _memory(inst: Instance, deg: Degrees, seqs: int, tokens: int) -> MemoryParts:
    """Per-GPU memory parts (cost-model §1.3), bytes."""
    m, hw, wl = inst.model, inst.hardware, inst.workload
    b = DTYPE_BYTES[m.weight_dtype]
    h = m.hidden_size
    layer_w = (cm.attention_params(m) / deg.tp + cm.router_params(m) + cm.norm_params_per_layer(m)
               + m.num_experts // deg.ep * cm.expert_params(m) / deg.etp) * b
    layer_kv = seqs * wl.prompt_tokens * cm.kv_bytes_per_token_layer(m, deg.tp)
    mean_copies = tokens * m.top_k * deg.etp / deg.tp  # routed rows one GPU computes
    qkv_width = (m.num_attention_heads + 2 * m.num_kv_heads) * m.head_dim / deg.tp
    inter = (m.ffn_matrices - 1) * m.expert_ffn_size / deg.etp
    acts = (tokens * ACT_BYTES * (2 * h + qkv_width)
            + wl.moe_buffer_factor * mean_copies * ACT_BYTES * (h + inter))
    buffers = (hw.nccl_buffer_gb + hw.runtime_reserve_gb) * 1e9
    if deg.ep > 1:  # all-to-all send and receive: a GPU's own token share, before ETP gathers
        buffers += (1 + wl.moe_buffer_factor) * tokens / deg.tp * m.top_k * h * ACT_BYTES
    if deg.pp > 1:
        buffers += tokens * h * ACT_BYTES / deg.tp
    head = 0.0 if (m.tie_word_embeddings and deg.pp == 1) else cm.embedding_params(m) / deg.tp * b
    return MemoryParts(ceil_int(acts), ceil_int(buffers), ceil_int(layer_w), ceil_int(layer_kv),
                       ceil_int(cm.embedding_params(m) / deg.tp * b), ceil_int(head + h * b))


def stage_costs(inst: Instance, deg: Degrees, facts: LinkFacts) -> StageCosts:
    """All integer coefficients of configuration ``deg`` under link facts ``facts``."""
    m, hw, gpu = inst.model, inst.hardware, inst.hardware.gpu
    seqs = seqs_per_replica(inst, deg.dp)
    mb_seqs = ceil_div(seqs, deg.micro_batches)
    tokens = mb_seqs * inst.workload.prompt_tokens
    dense_ns, tp_comm_ns = _dense_layer(inst, deg, tokens, facts)
    f_ns, w_ns, a_ns, k_ns, alpha_ns = _moe_terms(inst, deg, tokens, facts)
    hidden_bytes = tokens * m.hidden_size * ACT_BYTES
    tp_bw, tp_lat = cm.link(hw, facts.tp_inter_node)
    embed_s = cm.hbm_s(hidden_bytes, gpu) + cm.allreduce_s(hidden_bytes, deg.tp, tp_bw, tp_lat)
    head_s = cm.roofline_s(mb_seqs * cm.lm_head_flops_per_sequence(m) / deg.tp,
                           cm.embedding_params(m) / deg.tp * DTYPE_BYTES[m.weight_dtype], gpu)
    pp_bw, pp_lat = cm.link(hw, facts.pp_inter_node)
    p2p_s = hidden_bytes / deg.tp / pp_bw + pp_lat if deg.pp > 1 else 0.0
    return StageCosts(deg, seqs, mb_seqs, dense_ns, tp_comm_ns, f_ns, w_ns, a_ns, k_ns, alpha_ns,
                      seconds_to_ns(embed_s), seconds_to_ns(head_s), seconds_to_ns(p2p_s),
                      _memory(inst, deg, seqs, tokens))
