"""The serving model's inputs and outputs (``metrics``): request sizes, SLOs, what the model
needs of one configuration (its engine-step time), and the predicted metrics at one rate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from optimizer.costs.serving.knobs import ServingKnobs

StepNs = Callable[[ServingKnobs, int, int, int], int]  # (knobs, chunk, decodes, context) -> ns
# (knobs, prompt, chunk, decodes, context) -> ns: a step whose first chunk is of a ``prompt``-token prompt
LeadStepNs = Callable[[ServingKnobs, int, int, int, int], int]
# (knobs, prompt lengths, decodes, context) -> ns: a step of those whole prompts (cut at C - decodes)
PromptsStepNs = Callable[[ServingKnobs, tuple[int, ...], int, int], int]
PERCENTILES = (50, 90, 99)


def z_of(percentile: int) -> float:
    """The standard normal quantile at ``percentile`` (e.g. 1.2816 at 90)."""
    return NormalDist().inv_cdf(percentile / 100)


@dataclass(frozen=True)
class ServiceLoad:
    """Request sizes: prompt and output tokens (means), the prompt lengths' squared
    coefficient of variation (0 = every prompt the same length) and their percentiles
    (``PERCENTILES``; empty = every prompt ``prompt_tokens`` long)."""

    prompt_tokens: int
    output_tokens: int
    prompt_cv2: float = 0.0
    prompt_percentile_tokens: tuple[int, ...] = ()
    output_points: tuple[int, ...] = ()  # equally likely output lengths (empty: all D)
    prompt_points: tuple[int, ...] = ()  # equally likely prompt lengths (empty: all s)

    def decode_lives(self) -> np.ndarray:
        """The decode steps L = D' - 1 of equally likely requests that decode (D' > 1)."""
        lives = [d - 1 for d in (self.output_points or (self.output_tokens,)) if d > 1]
        return np.array(lives or [max(0, self.output_tokens - 1)], dtype=float)

    def prompt_lengths(self) -> np.ndarray:
        """Equally likely prompt lengths, tokens (``prompt_points``, or s alone)."""
        return np.array(self.prompt_points or (self.prompt_tokens,), dtype=float)

    def prompt_at(self, percentile: int) -> int:
        """The prompt length at ``percentile`` (one of ``PERCENTILES``), tokens."""
        if not self.prompt_percentile_tokens:
            return self.prompt_tokens
        return self.prompt_percentile_tokens[PERCENTILES.index(percentile)]

    @property
    def decode_context_tokens(self) -> int:
        """Mean context of a decode step: s + (D + 1) / 2, rounded down."""
        return self.prompt_tokens + (self.output_tokens + 1) // 2


@dataclass(frozen=True)
class Slo:
    """Service-level objectives, judged at ``percentile`` (a missing one is not enforced)."""

    max_ttft_s: float | None = None
    max_tpot_ms: float | None = None
    max_e2e_latency_s: float | None = None
    percentile: int = 90


@dataclass(frozen=True)
class Replica:
    """What the serving model needs of one configuration."""

    step_ns: StepNs
    queues: int  # independent schedulers sharing the arrivals evenly
    gpus: int
    lead_step_ns: LeadStepNs | None = None  # None: the first chunk is a mean prompt's (step_ns)
    prompts_step_ns: PromptsStepNs | None = None  # None: a prompt step is the mean make-up's (step_ns)
    # memos of functions of this replica (``prompt_mix``, ``metrics.sustainable_rps``): they
    # die with it, so a long search keeps no replica (and its step-time caches) alive through
    # a module-level cache
    memo: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ServiceMetrics:
    """Predicted metrics at one deployment rate (seconds, ms, per second)."""

    rate_rps: float
    stable: bool
    utilization: float  # max(prefill server utilisation, running decodes / B)
    running_requests: float  # mean running decodes per queue
    step_full_ns: int  # a prompt's step (chunk + the decodes of the replica it joins), rounded up
    step_decode_ns: int  # a step without prefill (the decodes a decoding request sees), rounded up
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    tpot_ms: float  # mean over requests
    e2e_p90_s: float
    output_tokens_per_s_per_gpu: float
    tpot_p50_ms: float = math.inf
    tpot_p90_ms: float = math.inf
    tpot_p99_ms: float = math.inf

    def ttft_at(self, percentile: int) -> float:
        return {50: self.ttft_p50_s, 90: self.ttft_p90_s, 99: self.ttft_p99_s}[percentile]

    def tpot_at(self, percentile: int) -> float:
        return {50: self.tpot_p50_ms, 90: self.tpot_p90_ms, 99: self.tpot_p99_ms}[percentile]

    @property
    def tokens_per_s_per_user(self) -> float:
        return 1000.0 / self.tpot_ms if self.tpot_ms > 0 else math.inf
