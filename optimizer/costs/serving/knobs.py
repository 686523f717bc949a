"""Admissible serving knobs of one configuration, enumerated in plain Python.

A knob tuple fixes, per replica: the cap B on running (decoding) requests, the prefill
chunk budget C (prompt tokens one engine step may prefill), and the micro-batch counts of
the prefill chunk and of the decodes (pipeline micro-batching). CP-SAT selects one tuple
(a one-hot choice), so no product of knobs is ever a constraint.

Memory at the peak of a tuple, per GPU of the most loaded stage:
    fixed + activation_bytes_per_token * (C + B) + kv_bytes_per_request * B
(activations are bounded by the tokens of one engine step, C + B, not by a whole batch; the
KV cache holds B requests at their final context, prompt + output tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

# Chunk budgets (tokens) of vLLM/SGLang practice: 512 .. 16,384, powers of two.
CHUNK_TOKENS = (512, 1024, 2048, 4096, 8192, 16384)
# Largest running-request cap considered (engines default to 256..1024).
MAX_RUNNING_CAP = 4096


@dataclass(frozen=True, order=True)
class ServingKnobs:
    """Per-replica serving knobs."""

    max_running_requests: int  # B, running decodes at most
    prefill_chunk_tokens: int  # C, prompt tokens per engine step at most
    prefill_micro_batches: int  # the chunk is split into this many pipeline micro-batches
    decode_micro_batches: int  # the running decodes are split into this many


@dataclass(frozen=True)
class ReplicaMemory:
    """Per-GPU bytes of the most loaded GPU of one configuration, and its capacity."""

    fixed_bytes: int  # weights, communication buffers, runtime reserve
    kv_bytes_per_request: int  # KV cache of one request at its final context
    activation_bytes_per_token: int  # activations per token of an engine step
    capacity_bytes: int

    def peak_bytes(self, running: int, chunk_tokens: int) -> int:
        """Bytes at the peak: B requests at their final context, a step of C + B tokens."""
        return (self.fixed_bytes + self.activation_bytes_per_token * (chunk_tokens + running)
                + self.kv_bytes_per_request * running)


def running_caps(limit: int) -> list[int]:
    """Caps B up to ``limit``: powers of two and their 1.5x steps (1, 2, 3, 4, 6, 8, 12, ...)."""
    caps, power = set(), 1
    while power <= limit:
        caps.add(power)
        if power >= 2 and power * 3 // 2 <= limit:
            caps.add(power * 3 // 2)
        power *= 2
    return sorted(caps)


def micro_batch_counts(pp: int, max_micro_batches: int) -> list[int]:
    """Micro-batch counts worth trying on ``pp`` stages: 1 (no micro-batching) and pp (the
    fewest that fill the pipeline; more only add per-micro-batch overhead, fewer leave
    stages idle), within ``max_micro_batches``."""
    return sorted({1} | ({pp} if 1 < pp <= max_micro_batches else set()))


def largest_running_cap(mem: ReplicaMemory, chunk_tokens: int) -> int:
    """Largest B whose peak fits the capacity (0 when none does)."""
    room = mem.capacity_bytes - mem.fixed_bytes - mem.activation_bytes_per_token * chunk_tokens
    per_request = mem.kv_bytes_per_request + mem.activation_bytes_per_token
    return max(0, room // per_request) if per_request > 0 else MAX_RUNNING_CAP


def admissible_knobs(mem: ReplicaMemory, pp: int, max_micro_batches: int = 32) -> list[ServingKnobs]:
    """Every knob tuple of one configuration whose peak memory fits: B from ``running_caps``
    up to the KV limit at C, C from ``CHUNK_TOKENS``, micro-batch counts from
    ``micro_batch_counts`` with at most B decode micro-batches and C / m_p >= 1 tokens each."""
    counts = micro_batch_counts(pp, max_micro_batches)
    out = []
    for chunk in CHUNK_TOKENS:
        limit = min(MAX_RUNNING_CAP, largest_running_cap(mem, chunk))
        for cap in running_caps(limit):
            for m_p in counts:
                if chunk % m_p:
                    continue
                for m_d in counts:
                    if m_d <= cap:
                        out.append(ServingKnobs(cap, chunk, m_p, m_d))
    return out
