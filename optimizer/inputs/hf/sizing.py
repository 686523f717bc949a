"""Weight-only GPU sizing used by ``moeopt init`` and ``moeopt inspect``: memory per GPU left for
weights, and the fewest GPUs that hold every weight once."""

from __future__ import annotations

import math


def usable_memory_gb(memory_gb: float, runtime_reserve_gb: float, nccl_buffer_gb: float) -> float:
    """Memory per GPU left for weights after the runtime and NCCL (no KV, no activations)."""
    return memory_gb - runtime_reserve_gb - nccl_buffer_gb


def min_gpus_for_weights(weight_bytes: float, usable_gb: float) -> int:
    """GPUs whose usable memory together holds every weight once (a lower bound)."""
    return max(1, math.ceil(weight_bytes / (usable_gb * 1e9))) if usable_gb > 0 else 0
