"""The MoE token exchange: how a layer's tokens reach the EP ranks holding their experts and
come back (docs/cost-model.md §1.5), in the kernel family ``hardware.moe_token_exchange`` names.

- ``deepep``: an all-to-all, dispatch before the experts and combine after them. With a
  hardware profile, DeepEP's kernels (low-latency for decode-sized batches, normal otherwise)
  with their own byte model and measured curves (``profiled.a2a_profiled_s``); without one,
  the alpha-beta all-to-all of ``k`` copies per token (``formulas.all_to_all_hot_s``). Its
  time scales with the hot rank's share of the routed rows.
- ``allgather``: an NCCL ring all-gather of every EP rank's hidden states before the experts
  and a ring reduce-scatter of their outputs after them (SGLang's default backend, vLLM's
  ``allgather_reducescatter``, TensorRT-LLM's non-wide-EP path). Every rank receives the
  whole group's tokens whatever the routing, so the time does not depend on the expert load.

``token_exchange_s`` returns both shapes as (load-scaled part at full load, fixed part): the
cost tables put the first in ``K`` and the second in ``alpha``.
"""

from __future__ import annotations

import math

from optimizer.costs import formulas as cm
from optimizer.costs import profiled
from optimizer.costs.profile import efficiency_of
from optimizer.inputs.schema import Instance

ACT_BYTES = 2  # activations and communicated hidden states are 16-bit (``tables`` uses this one)


def gathered_bytes(inst: Instance, ep: int, tokens_per_rank: float) -> float:
    """Bytes of one all-gather in all (the whole EP group's hidden states): EP x T x h x a.
    A ring moves (EP-1)/EP of them over each rank's link: (EP-1) x T x h x a received."""
    return ep * tokens_per_rank * inst.model.hidden_size * ACT_BYTES


def ring_collective_s(inst: Instance, eff, num_bytes: float, ep: int, inter_node: bool) -> float:
    """One ring all-gather (or reduce-scatter: the same bytes and steps) of ``num_bytes`` in all
    over ``ep`` ranks on the slowest link the group spans, s: (n-1)/n x S / (BW x eta) +
    latency. The profile's NCCL all-gather table of that link gives eta and one per-message
    latency. A profile without a table for the inter-node link lends it the intra-node
    table's sustained eta (at its largest measured message; as DeepEP borrows its intra-node
    curve) and keeps the alpha-beta ring's (n-1) per-step latencies: the measured latency and
    the small-message etas are an intra-node ring's. No profile: eta 1, (n-1) latencies."""
    bandwidth, latency = cm.link(inst.hardware, inter_node)
    if eff.flat:
        return cm.allgather_s(num_bytes, ep, bandwidth, latency)
    own = eff.collective("all_gather", "inter" if inter_node else "intra", ep, num_bytes, "nccl")
    if own is not None:
        return cm.allgather_s(num_bytes, ep, bandwidth, latency, own)
    lent = eff.collective("all_gather", "intra", ep, math.inf, "nccl") if inter_node else None
    return cm.allgather_s(num_bytes, ep, bandwidth * (lent[1] if lent else 1.0), latency)


def token_exchange_s(inst: Instance, ep: int, tokens_per_rank: float, local_peers: int,
                     remote_peers: int) -> tuple[float, float]:
    """(time at full load, load-independent time) of one MoE layer's token exchange, both
    directions, s, for ``tokens_per_rank`` tokens on each of ``ep`` ranks whose worst member
    has ``local_peers`` EP peers on its node and ``remote_peers`` on others. Full load is the
    cost tables' convention (the hot rank's time is it times its share of the routed rows)."""
    if ep <= 1:
        return 0.0, 0.0
    hw, m = inst.hardware, inst.model
    eff = efficiency_of(inst)
    if hw.moe_token_exchange == "allgather":
        gather = ring_collective_s(inst, eff, gathered_bytes(inst, ep, tokens_per_rank), ep,
                                   remote_peers > 0)
        return 0.0, 2 * gather  # all-gather before the experts, reduce-scatter after
    measured = None if eff.flat else profiled.a2a_profiled_s(inst, eff, tokens_per_rank, ep,
                                                             local_peers, remote_peers)
    if measured is not None:  # the profile's kernel family (DeepEP), its per-message latency
        return 2 * measured[0], 2 * measured[1]
    from_each_peer = tokens_per_rank * m.top_k * m.hidden_size * ACT_BYTES
    _, latency = cm.link(hw, remote_peers > 0)
    return 2 * cm.all_to_all_hot_s(from_each_peer, local_peers, remote_peers, hw), 2 * latency


def token_exchange_sol_s(inst: Instance, ep: int, tokens_per_rank: float, local_peers: int,
                         remote_peers: int) -> tuple[float, float]:
    """Speed of light of ``token_exchange_s`` in the same shape: the bytes the kernel family
    moves over each link / that link's bandwidth, both directions, no latency. DeepEP under
    a profile: its NVLink and RDMA bytes (``profiled.a2a_bytes``); the alpha-beta
    all-to-all: its ``k`` copies per token; all-gather: 2 x (EP-1) x T x h x a on the slowest
    link."""
    if ep <= 1:
        return 0.0, 0.0
    hw, m = inst.hardware, inst.model
    eff = efficiency_of(inst)
    inter_bw, _ = cm.link(hw, True)
    if hw.moe_token_exchange == "allgather":
        bandwidth, _ = cm.link(hw, remote_peers > 0)
        received = (ep - 1) / ep * gathered_bytes(inst, ep, tokens_per_rank)
        return 0.0, 2 * received / bandwidth
    if not eff.flat and profiled.a2a_profiled_s(inst, eff, tokens_per_rank, ep, local_peers,
                                                remote_peers) is not None:
        nvlink, rdma = profiled.a2a_bytes(inst, tokens_per_rank, ep, local_peers, remote_peers)
        intra_bw, _ = cm.link(hw, False)
        return 2 * ep * max(nvlink / intra_bw, rdma / inter_bw), 0.0
    from_each_peer = tokens_per_rank * m.top_k * m.hidden_size * ACT_BYTES
    return 2 * cm.all_to_all_hot_s(from_each_peer, local_peers, remote_peers, hw), 0.0
