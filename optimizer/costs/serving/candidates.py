"""Service candidates: one (configuration, knob tuple) with its predicted figures and the
integer scores CP-SAT selects on (``units`` does the scaling).

Scores (all "more is better" except where said):
- ``goodput``: deployment goodput, micro-requests/s (DistServe's goodput at the SLO percentile);
- ``throughput``: output tokens/s of the deployment at its sustainable rate (its capacity,
  latency aside), milli-tokens/s;
- ``meets_rate``: the SLOs hold at the instance's own arrival rate (None: no rate given).
Every candidate of one solve uses the same GPUs, so per-GPU figures order like these.
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.costs.layout import Degrees
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import (
    Replica,
    ServiceLoad,
    ServiceMetrics,
    Slo,
    goodput_rps,
    meets,
    predict,
    sustainable_rps,
)
from optimizer.costs.units import rate_to_int, token_rate_to_int


@dataclass(frozen=True)
class ServiceCandidate:
    """One configuration with one knob tuple, and what it achieves."""

    deg: Degrees
    knobs: ServingKnobs
    gpus: int
    output_tokens: int  # per request (mean)
    goodput_rps: float
    sustainable_rps: float
    at_goodput: ServiceMetrics  # the metrics at the goodput rate (at a tiny rate if it is 0)
    at_rate: ServiceMetrics | None  # at the instance's arrival rate, if it gives one
    meets_rate: bool | None

    @property
    def goodput_score(self) -> int:
        return rate_to_int(self.goodput_rps)

    @property
    def throughput_score(self) -> int:
        return token_rate_to_int(self.sustainable_rps * self.output_tokens)

    @property
    def goodput_rps_per_gpu(self) -> float:
        return self.goodput_rps / self.gpus

    @property
    def throughput_tokens_per_s_per_gpu(self) -> float:
        return self.throughput_score / 1e3 / self.gpus


def evaluate_candidate(deg: Degrees, knobs: ServingKnobs, rep: Replica, load: ServiceLoad, slo: Slo,
                       rate_rps: float | None) -> ServiceCandidate:
    """Goodput, sustainable rate and the metrics at both rates of one candidate."""
    good = goodput_rps(rep, knobs, load, slo)
    cap = sustainable_rps(rep, knobs, load)
    probe = good if good > 0 else cap * 1e-6
    at_rate = predict(rep, knobs, load, rate_rps) if rate_rps is not None else None
    return ServiceCandidate(deg, knobs, rep.gpus, load.output_tokens, good, cap, predict(rep, knobs, load, probe), at_rate,
                            None if at_rate is None else meets(at_rate, slo, load))


def evaluate_group(deg: Degrees, group: list[ServingKnobs], rep: Replica, load: ServiceLoad, slo: Slo,
                   rate_rps: float | None) -> list[ServiceCandidate]:
    """Candidates of knob tuples that differ only in B (one chunk budget and micro-batch
    pair). The predicted latencies at a rate do not depend on B, which only caps the running
    decodes; so with g the goodput under the largest cap, goodput(B) = min(g, sustainable(B))
    for every smaller cap, and one goodput search serves the whole group."""
    widest = max(group, key=lambda k: k.max_running_requests)
    good_widest = goodput_rps(rep, widest, load, slo)
    out = []
    for knobs in group:
        cap = sustainable_rps(rep, knobs, load)
        good = good_widest if knobs == widest else min(good_widest, cap)
        at_rate = predict(rep, knobs, load, rate_rps) if rate_rps is not None else None
        probe = good if good > 0 else cap * 1e-6
        out.append(ServiceCandidate(deg, knobs, rep.gpus, load.output_tokens, good, cap,
                                    predict(rep, knobs, load, probe), at_rate,
                                    None if at_rate is None else meets(at_rate, slo, load)))
    return out
