"""Admissible serving knobs of one configuration, enumerated in plain Python.

A knob tuple fixes, per replica: the cap B on running requests, the token budget C of one
engine step (decode tokens plus prompt chunk: vLLM's max-num-batched-tokens, SGLang's
chunked-prefill size; C >= B, so a step holds one token of every running request), and the
micro-batch counts of prefill-only steps and of steps with decodes (pipeline micro-batching).
CP-SAT selects one tuple (a one-hot choice), so no product of knobs is ever a constraint.

Memory at the peak of a tuple, per GPU of the most loaded stage:
    fixed + activation_bytes_per_token * C + kv_bytes_per_request * B
(activations are bounded by the C tokens of one engine step, not by a whole batch; the KV
cache holds B requests at their final context, prompt + output tokens). With
``hardware.kv_pool_runtime`` the B requests must also fit the KV pool that runtime carves
out of the GPU from its memory fraction (``formulas.runtime_kv_pool_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.costs.formulas import runtime_kv_pool_bytes

# Chunk budgets (tokens) of vLLM/SGLang practice: 512 .. 16,384, powers of two.
CHUNK_TOKENS = (512, 1024, 2048, 4096, 8192, 16384)
# Largest running-request cap considered (engines default to 256..1024).
MAX_RUNNING_CAP = 4096


@dataclass(frozen=True, order=True)
class ServingKnobs:
    """Per-replica serving knobs."""

    max_running_requests: int  # B, running requests at most
    prefill_chunk_tokens: int  # C, tokens of one engine step (decodes + prompt chunks)
    prefill_micro_batches: int  # micro-batches of a prefill-only step
    decode_micro_batches: int  # micro-batches of a step with decodes


@dataclass(frozen=True)
class RuntimePool:
    """A runtime's rule for its KV pool (``formulas.runtime_kv_pool_bytes``) on one GPU."""

    runtime: str  # "sglang" | "vllm" | "trtllm"
    fraction: float | None  # its memory fraction; None = the runtime's default
    gpu_bytes: int  # the GPU's whole memory
    weight_bytes: int  # weights of the most loaded GPU
    step_fixed_bytes: int  # activations of a step that do not grow with its tokens
    reserve_bytes: int  # communication buffers and runtime reserve

    def kv_pool_bytes(self, step_activation_bytes: int) -> float:
        """The pool the runtime holds beside a step of ``step_activation_bytes``."""
        return runtime_kv_pool_bytes(self.runtime, self.gpu_bytes, self.weight_bytes,
                                     self.step_fixed_bytes + step_activation_bytes,
                                     self.reserve_bytes, self.fraction)


@dataclass(frozen=True)
class ReplicaMemory:
    """Per-GPU bytes of the most loaded GPU of one configuration, and its capacity."""

    fixed_bytes: int  # weights, communication buffers, runtime reserve
    kv_bytes_per_request: int  # KV cache of one request at its final context
    activation_bytes_per_token: int  # activations per token of an engine step
    capacity_bytes: int
    runtime_pool: RuntimePool | None = None  # hardware.kv_pool_runtime's rule, if given

    def runtime_kv_pool_bytes(self, step_tokens: int) -> float | None:
        """The KV pool ``runtime_pool``'s runtime holds beside a step of ``step_tokens``
        (None without a runtime's rule)."""
        if self.runtime_pool is None:
            return None
        return self.runtime_pool.kv_pool_bytes(self.activation_bytes_per_token * step_tokens)

    def peak_bytes(self, running: int, step_tokens: int) -> int:
        """Bytes at the peak: B requests at their final context, a step of C tokens."""
        return (self.fixed_bytes + self.activation_bytes_per_token * step_tokens
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
    """Decode micro-batch counts worth trying on ``pp`` stages: 1 (no micro-batching) and pp
    (the fewest that fill the pipeline; more only add per-micro-batch overhead, fewer leave
    stages idle), within ``max_micro_batches``."""
    return sorted({1} | ({pp} if 1 < pp <= max_micro_batches else set()))


def prefill_micro_batches(pp: int, max_micro_batches: int) -> int:
    """Micro-batches of a prefill-only step: pp (within ``max_micro_batches``). A step cuts
    its prompt chunks into min(m_p, chunks) micro-batches, and a pipeline makespan
    (p + m - 1) t / m never grows with m <= p, so pp is never worse than fewer."""
    return max(1, min(pp, max_micro_batches))


def largest_running_cap(mem: ReplicaMemory, chunk_tokens: int) -> int:
    """Largest B whose peak fits the capacity and, with a runtime's rule, whose KV caches
    fit that runtime's pool beside a step of C tokens (0 when none does)."""
    room = mem.capacity_bytes - mem.fixed_bytes - mem.activation_bytes_per_token * chunk_tokens
    per_request = mem.kv_bytes_per_request
    if per_request <= 0:
        return MAX_RUNNING_CAP
    cap = max(0, room // per_request)
    pool = mem.runtime_kv_pool_bytes(chunk_tokens)
    if pool is not None:
        cap = min(cap, max(0, int(pool // per_request)))
    return cap


def admissible_knobs(mem: ReplicaMemory, pp: int, max_micro_batches: int = 32) -> list[ServingKnobs]:
    """Every knob tuple of one configuration whose peak memory fits: C from ``CHUNK_TOKENS``,
    B from ``running_caps`` up to the KV limit at C and to C, m_p from
    ``prefill_micro_batches``, m_d from ``micro_batch_counts`` and at most B."""
    counts = micro_batch_counts(pp, max_micro_batches)
    m_p = prefill_micro_batches(pp, max_micro_batches)
    out = []
    for chunk in CHUNK_TOKENS:
        limit = min(MAX_RUNNING_CAP, chunk, largest_running_cap(mem, chunk))
        for cap in running_caps(limit):
            for m_d in counts:
                if m_d <= cap:
                    out.append(ServingKnobs(cap, chunk, m_p, m_d))
    return out
