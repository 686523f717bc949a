"""Pool candidates of a disaggregated service (plain Python): per-replica figures of every
prefill and decode replica configuration, the KV transfer between the pools, and the
integer scores the CP-SAT choice works on (docs/serving-model.md, "Disaggregated serving").

A **prefill replica** (degrees on g GPUs, knobs C, m_p, B) serves prompts only:
``disagg_prefill.predict_prefill_only`` (the aggregated model with no decodes for the steps
and utilisation, short prompts sharing a step; the wait of a prompt routed on arrival to one
of its dp queues), and
    TTFT_q = wait_q + max(1, s / C) step(x, 0) + transfer
Its goodput is the highest per-replica rate at which TTFT_q meets the SLO; the transfer
depends on the decode replica's size and the link (``transfer``), so a prefill
configuration gets one goodput per transfer class (link, links).
A **decode replica** (knobs B, m_d; C = B, no prompt chunk) is ``disagg_decode``'s model,
its KV memory holding B requests at full context (prompt + output tokens).

A pool of x identical replicas receives the deployment's rate split evenly (random
splitting over replicas, least-loaded routing inside one): it serves x times one replica's
rate, so the pool's goodput and capacity are linear in x (exact for the model, conservative
against one pooled queue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimizer.costs import formulas as cm
from optimizer.costs.layout import Degrees
from optimizer.costs.serving.disagg_decode import (
    DecodeQueue,
    decode_capacity_rps,
    decode_goodput_rps,
    meets_tpot,
    predict_decode,
)
from optimizer.costs.serving.disagg_prefill import largest_rate_below, meets_prefill_slo, predict_prefill_only
from optimizer.costs.serving.knobs import (
    CHUNK_TOKENS,
    MAX_RUNNING_CAP,
    ReplicaMemory,
    ServingKnobs,
    largest_running_cap,
    micro_batch_counts,
    prefill_micro_batches,
    running_caps,
)
from optimizer.costs.serving.metrics import (
    Replica,
    ServiceLoad,
    ServiceMetrics,
    Slo,
    sustainable_rps,
)
from optimizer.costs.units import rate_to_int, token_rate_to_int
from optimizer.inputs.schema import Instance

INTRA_NODE, INTER_NODE = "intra_node", "inter_node"


# ---------------------------------------------------------------- KV transfer


def kv_transfer_bytes(inst: Instance, prompt_tokens: int) -> float:
    """Bytes of one request's KV cache after its prompt: one copy, every layer (a sliding
    layer keeps at most its window), ``kv_bytes_per_token_layer`` at tp = 1."""
    m = inst.model
    tokens = sum(cm.kv_tokens(m, layer, prompt_tokens) for layer in range(m.num_layers))
    return tokens * cm.kv_bytes_per_token_layer(m, 1)


def transfer_seconds(inst: Instance, num_bytes: float, links: int, link: str) -> float:
    """bytes / (links x per-GPU bandwidth of the link) + the link's latency, seconds."""
    hw = inst.hardware
    if link == INTRA_NODE:
        bandwidth, latency_us = hw.intra_node_bandwidth_gb_s, hw.intra_node_latency_us
    else:
        bandwidth, latency_us = hw.inter_node_bandwidth_gb_s, hw.inter_node_latency_us
    return num_bytes / (links * bandwidth * 1e9) + latency_us * 1e-6


@dataclass(frozen=True, order=True)
class TransferClass:
    """What the transfer of one (prefill, decode) pair depends on."""

    link: str  # "intra_node" (the whole deployment on one node) or "inter_node"
    links: int  # min(GPUs of a prefill replica, GPUs of a decode replica)


# ---------------------------------------------------------------- loads of each pool


def prefill_load(load: ServiceLoad) -> ServiceLoad:
    """The prefill pool's view: the prompts, one output token (no decodes)."""
    return ServiceLoad(load.prompt_tokens, 1, load.prompt_cv2)


def prompt_kv_load(load: ServiceLoad) -> ServiceLoad:
    """For ``replica_memory``: a prefill replica keeps each prompt's KV until it is sent."""
    return ServiceLoad(load.prompt_tokens, 0, load.prompt_cv2)


def prefill_knobs(mem: ReplicaMemory, pp: int, prompt_tokens: int, max_micro_batches: int) -> list[ServingKnobs]:
    """One knob tuple per chunk budget C whose memory fits: B the largest running cap
    (powers of two and 1.5x steps) within C, 4096 and the KV of prompts at their prompt
    length, and at least the prompts one step touches (ceil(C / s) + 1); m_p as the
    aggregated model (pp); m_d = 1 (no decode step). A larger B never changes a prediction."""
    out = []
    for chunk in CHUNK_TOKENS:
        limit = min(MAX_RUNNING_CAP, chunk, largest_running_cap(mem, chunk))
        caps = running_caps(limit)
        if caps and caps[-1] >= -(-chunk // prompt_tokens) + 1:
            out.append(ServingKnobs(caps[-1], chunk, prefill_micro_batches(pp, max_micro_batches), 1))
    return out


def decode_knobs(mem: ReplicaMemory, pp: int, max_micro_batches: int) -> list[ServingKnobs]:
    """One knob tuple per decode micro-batch count m_d: B the largest running cap whose KV
    at full context and activations of a B-token step fit, C = B (no prompt chunk), m_p = 1.
    Tuples with a smaller B are dominated (the same latencies, a lower cap on the rate)."""
    room = mem.capacity_bytes - mem.fixed_bytes
    per_request = mem.kv_bytes_per_request + mem.activation_bytes_per_token
    limit = min(MAX_RUNNING_CAP, room // per_request if per_request > 0 else MAX_RUNNING_CAP)
    caps = running_caps(limit) if limit >= 1 else []
    if not caps:
        return []
    cap = caps[-1]
    return [ServingKnobs(cap, cap, 1, m_d) for m_d in micro_batch_counts(pp, max_micro_batches) if m_d <= cap]


# ---------------------------------------------------------------- candidates


def min_replicas(ok_at_rate, rate_rps: float | None, goodput_per_replica: float) -> int | None:
    """Fewest replicas x whose per-replica rate ``rate / x`` passes ``ok_at_rate`` (None when
    no rate is given: 0; None also when one replica serves nothing)."""
    if rate_rps is None or rate_rps <= 0:
        return 0
    if goodput_per_replica <= 0:
        return None
    n = max(1, math.ceil(rate_rps / goodput_per_replica))
    while not ok_at_rate(rate_rps / n):  # guards the bisection's tolerance
        n += 1
    while n > 1 and ok_at_rate(rate_rps / (n - 1)):
        n -= 1
    return n


class _PoolScores:
    """The integer scores CP-SAT selects on (``units`` scales): goodput in micro-requests/s,
    throughput as the capacity's output tokens in milli-tokens/s, per replica."""

    goodput_rps: float
    capacity_rps: float
    output_tokens: int

    @property
    def goodput_score(self) -> int:
        return rate_to_int(self.goodput_rps)

    @property
    def throughput_score(self) -> int:
        return token_rate_to_int(self.capacity_rps * self.output_tokens)


@dataclass(frozen=True)
class PrefillCandidate(_PoolScores):
    """One prefill replica configuration for one transfer class, per replica."""

    deg: Degrees
    knobs: ServingKnobs
    gpus: int
    transfer: TransferClass
    transfer_s: float
    goodput_rps: float  # TTFT (with the transfer) within the SLO at the percentile
    capacity_rps: float  # prefill utilisation below 1
    min_replicas: int | None  # at the instance's rate (0 without one; None: cannot serve it)
    output_tokens: int


@dataclass(frozen=True)
class DecodeCandidate(_PoolScores):
    """One decode replica configuration, per replica."""

    deg: Degrees
    knobs: ServingKnobs
    gpus: int
    goodput_rps: float
    capacity_rps: float
    min_replicas: int | None
    output_tokens: int


def prefill_slo(slo: Slo, transfer_s: float) -> Slo:
    """The prefill replica's TTFT budget: the SLO less the transfer."""
    ttft = None if slo.max_ttft_s is None else slo.max_ttft_s - transfer_s
    return Slo(ttft, None, None, slo.percentile)


def predict_prefill(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float) -> ServiceMetrics:
    """Prefill replica metrics at ``rate_rps`` per replica (TTFT without the transfer)."""
    return predict_prefill_only(rep, knobs, prefill_load(load), rate_rps)


def evaluate_prefill(deg: Degrees, knobs: ServingKnobs, rep: Replica, load: ServiceLoad, slo: Slo,
                     rate_rps: float | None, transfers: dict[TransferClass, float],
                     capacity_rps: float | None = None) -> list[PrefillCandidate]:
    """One candidate per transfer class (``transfers``: class -> seconds); one goodput
    search per distinct transfer time. ``capacity_rps``: the replica's sustainable rate on
    the prefill load, if the caller has it."""
    pl = prefill_load(load)
    capacity = sustainable_rps(rep, knobs, pl) if capacity_rps is None else capacity_rps
    by_seconds: dict[float, tuple[float, int | None]] = {}
    out = []
    for cls, seconds in sorted(transfers.items()):
        if seconds not in by_seconds:
            budget = prefill_slo(slo, seconds)
            def ok(r, b=budget):
                return meets_prefill_slo(rep, knobs, pl, r, b)
            good = largest_rate_below(ok, capacity)
            n = min_replicas(ok, rate_rps, good)
            by_seconds[seconds] = (good, n)
        good, n = by_seconds[seconds]
        out.append(PrefillCandidate(deg, knobs, rep.gpus, cls, seconds, good, capacity, n, load.output_tokens))
    return out


def decode_queue(rep: Replica, knobs: ServingKnobs, load: ServiceLoad) -> DecodeQueue:
    """The decode model's view of a replica: decode-only steps at the mean decode context."""
    context = load.decode_context_tokens

    def step(decodes: int) -> int:
        return rep.step_ns(knobs, 0, decodes, context)
    return DecodeQueue(step, rep.queues, load.output_tokens, knobs.max_running_requests)


def evaluate_decode(deg: Degrees, knobs: ServingKnobs, rep: Replica, load: ServiceLoad, slo: Slo,
                    rate_rps: float | None) -> DecodeCandidate:
    dq = decode_queue(rep, knobs, load)
    good = decode_goodput_rps(dq, slo.max_tpot_ms, slo.percentile)
    n = min_replicas(lambda r: meets_tpot(predict_decode(dq, r), slo.max_tpot_ms, slo.percentile),
                     rate_rps, good)
    return DecodeCandidate(deg, knobs, rep.gpus, good, decode_capacity_rps(dq), n, load.output_tokens)


def undominated(cands: list, key) -> list:
    """Candidates no other candidate of the same GPUs (and transfer classes) matches or beats
    in every figure of ``key`` (a tuple, more is better); the first of equal ones is kept."""
    by_group: dict = {}
    for c in cands:
        by_group.setdefault(key(c)[0], []).append(c)
    out = []
    for group in by_group.values():
        kept: list = []
        for c in sorted(group, key=lambda c: tuple(-v for v in key(c)[1])):
            figures = key(c)[1]
            if not any(all(a >= b for a, b in zip(key(k)[1], figures)) for k in kept):
                kept.append(c)
        out.extend(kept)
    return out
