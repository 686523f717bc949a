"""The requests of a service workload: lengths drawn from the instance's distributions,
arrival times (Poisson at a rate, a closed loop, or a trace's own times), seeded and
reproducible. Shared by the simulator and by anything that needs the length statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.errors import InputError
from optimizer.inputs.schema import ExponentialTokens, LogNormalTokens, ServiceWorkload, UniformTokens
from optimizer.inputs.traces import Trace, read_trace


@dataclass(frozen=True)
class Requests:
    """n requests in arrival order. ``arrival_s`` is None for a closed loop of
    ``concurrency`` users (each sends its next request when its last one finishes)."""

    prompt_tokens: np.ndarray  # (n,) int64
    output_tokens: np.ndarray  # (n,) int64, >= 1
    arrival_s: np.ndarray | None  # (n,) float64, non-decreasing
    concurrency: int | None = None

    def __len__(self) -> int:
        return len(self.prompt_tokens)


def draw_lengths(length, n: int, rng: np.random.Generator) -> np.ndarray:
    """n lengths (int64) from a fixed count or a distribution of the schema."""
    if isinstance(length, int):
        return np.full(n, length, dtype=np.int64)
    if isinstance(length, UniformTokens):
        return rng.integers(length.min_tokens, length.max_tokens + 1, size=n, dtype=np.int64)
    if isinstance(length, LogNormalTokens):  # E[X] = exp(mu + sigma^2 / 2) = mean_tokens
        mu = np.log(length.mean_tokens) - length.sigma ** 2 / 2
        raw = rng.lognormal(mu, length.sigma, size=n)
    elif isinstance(length, ExponentialTokens):
        raw = rng.exponential(length.mean_tokens, size=n)
    else:  # pragma: no cover - the schema admits no other kind
        raise TypeError(f"unknown length {length!r}")
    return np.clip(np.rint(raw), length.min_tokens, length.max_tokens).astype(np.int64)


def trace_path(workload: ServiceWorkload, instance_path: str | Path) -> Path:
    """The trace file, relative to the instance file's folder."""
    return Path(instance_path).parent / workload.trace


def load_trace(workload: ServiceWorkload, instance_path: str | Path) -> Trace | None:
    """The workload's trace (None without one); errors name ``workload.trace``."""
    if workload.trace is None:
        return None
    return read_trace(trace_path(workload, instance_path))


def make_requests(workload: ServiceWorkload, n: int, seed: int,
                  trace: Trace | None = None) -> Requests:
    """The first n requests of the service (a trace gives at most its own rows).

    Poisson: gaps exponential with mean 1/arrival_rate_rps, first arrival after one gap.
    Trace with arrival_rate_rps: its times shifted to start at 0 and scaled so that
    (rows - 1) / span = rate; a trace whose rows all share one time keeps them."""
    if n < 1:
        raise InputError(f"--requests={n}: must be at least 1")
    rng = np.random.default_rng(seed)
    if trace is not None:
        k = min(n, len(trace))
        arrival = trace.arrival_s[:k] - trace.arrival_s[0]
        span = float(arrival[-1])
        if workload.arrival_rate_rps is not None and k > 1 and span > 0:
            arrival = arrival * ((k - 1) / workload.arrival_rate_rps / span)
        return Requests(trace.prompt_tokens[:k].copy(), trace.output_tokens[:k].copy(),
                        None if workload.concurrency else arrival, workload.concurrency)
    prompt = draw_lengths(workload.prompt_tokens, n, rng)
    output = draw_lengths(workload.output_tokens, n, rng)
    if workload.concurrency is not None:
        return Requests(prompt, output, None, workload.concurrency)
    arrival = np.cumsum(rng.exponential(1.0 / workload.arrival_rate_rps, size=n))
    return Requests(prompt, output, arrival)
