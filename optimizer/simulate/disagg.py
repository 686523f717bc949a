"""What the simulator needs of a disaggregated plan (docs/plan-file.md, "Disaggregated
plans"): one ``Deployment`` per pool (prefill, then decode; each queue is an attention-DP
rank of one of the pool's replicas) and the KV transfer between them.

The transfer is the simulator's own reading of the documented rule (it shares no code with
the planner's): a request of ``s`` prompt tokens moves
``bytes = sum over layers of kv_tokens(layer, s) * kv_bytes_per_token_layer(tp = 1)`` (one
copy of the cache, a sliding layer at most its window) over ``links = min(g_prefill,
g_decode)`` GPU links in parallel, taking ``bytes / (links * bandwidth) + latency`` (rounded
up to whole ns by ``costs.units.seconds_to_ns``), on the intra-node link when the whole
deployment fits on one node, else on the inter-node one (the documented layout rule, written
here again rather than imported). A transfer is a pure delay (no link contention).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optimizer.costs import formulas as cm
from optimizer.costs.units import seconds_to_ns
from optimizer.inputs.schema import Instance
from optimizer.plan.pools import read_pools, replica_doc
from optimizer.simulate.deployment import DECODE, PREFILL, Deployment, deployment


@dataclass(frozen=True)
class Transfer:
    """KV transfer of one request from a prefill replica to a decode replica."""

    link: str                 # "intra_node" or "inter_node"
    links: int                # GPU links moving the cache in parallel
    bandwidth_gb_s: float     # per link
    latency_us: float
    bytes_per_token_layer: float  # one token's K and V in one layer, unsplit (tp = 1)
    full_layers: int          # layers that keep every prompt token
    sliding_layers: int       # layers that keep at most ``window`` tokens
    window: int
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def kv_bytes(self, prompt_tokens: int) -> float:
        """Bytes of one copy of the cache of a ``prompt_tokens`` prompt."""
        kept = self.full_layers * prompt_tokens + self.sliding_layers * min(prompt_tokens, self.window)
        return kept * self.bytes_per_token_layer

    def seconds(self, prompt_tokens: int) -> float:
        return (self.kv_bytes(prompt_tokens) / (self.links * self.bandwidth_gb_s * 1e9)
                + self.latency_us * 1e-6)

    def ns(self, prompt_tokens: int) -> int:
        if prompt_tokens not in self._memo:
            self._memo[prompt_tokens] = seconds_to_ns(self.seconds(prompt_tokens))
        return self._memo[prompt_tokens]


def transfer_of(inst: Instance, prefill_gpus: int, decode_gpus: int, total_gpus: int) -> Transfer:
    """The transfer between replicas of ``prefill_gpus`` and ``decode_gpus`` GPUs in a
    deployment of ``total_gpus``."""
    m, hw = inst.model, inst.hardware
    one_node = total_gpus <= hw.gpus_per_node  # every prefill replica beside every decode one
    link = "intra_node" if one_node else "inter_node"
    bandwidth, latency = ((hw.intra_node_bandwidth_gb_s, hw.intra_node_latency_us) if one_node
                          else (hw.inter_node_bandwidth_gb_s, hw.inter_node_latency_us))
    sliding = sum(1 for layer in range(m.num_layers) if m.is_sliding(layer))
    return Transfer(link, min(prefill_gpus, decode_gpus), bandwidth, latency,
                    cm.kv_bytes_per_token_layer(m, 1), m.num_layers - sliding, sliding,
                    m.sliding_window or 0)


@dataclass(frozen=True)
class DisaggDeployment:
    """The two pools of a disaggregated plan and the transfer between them."""

    prefill: Deployment
    decode: Deployment
    transfer: Transfer
    instance: Instance

    @property
    def pools(self) -> tuple[Deployment, Deployment]:
        return self.prefill, self.decode

    @property
    def num_gpus(self) -> int:
        return self.prefill.num_gpus + self.decode.num_gpus


def disagg_deployment(inst: Instance, doc: dict, options: dict[str, int | None],
                      source: str = "(in memory)") -> DisaggDeployment:
    """Both pools of the plan document ``doc`` (checked by ``plan.pools.read_pools``, then
    each replica as an aggregated plan is), knobs as ``deployment.plan_knobs`` reads them."""
    pools = read_pools(doc, inst, source)
    deps = {}
    for pool in pools:
        role = PREFILL if pool.role == "prefill" else DECODE
        deps[role] = deployment(inst, replica_doc(doc, pool.doc), options, role, pool.replicas)
    total = sum(p.num_gpus for p in pools)
    transfer = transfer_of(inst, pools[0].gpus_per_replica, pools[1].gpus_per_replica, total)
    return DisaggDeployment(deps[PREFILL], deps[DECODE], transfer, inst)
