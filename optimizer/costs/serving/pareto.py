"""The throughput-interactivity front of a service: output tokens/s per GPU (max) against
tokens/s per user (max), each candidate at its goodput rate (the highest rate at which it
meets the SLOs, so every point is a deployment one could run).

Groups of knob tuples are skipped when a bound on their points is dominated by a point
already found: throughput <= sustainable rate of the widest tuple x output tokens / GPUs,
and tokens/s per user <= 1000 / (the step of one lone decode, ms), since TPOT never falls
below it.
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.costs.serving.candidates import ServiceCandidate, evaluate_group
from optimizer.costs.serving.metrics import ServiceLoad, Slo, sustainable_rps


@dataclass(frozen=True)
class FrontPoint:
    candidate: ServiceCandidate
    output_tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float


def point(c: ServiceCandidate) -> FrontPoint:
    m = c.at_goodput
    return FrontPoint(c, c.goodput_rps * c.output_tokens / c.gpus, m.tokens_per_s_per_user)


def _dominated(x: tuple[float, float], points: list[FrontPoint]) -> bool:
    return any(p.output_tokens_per_s_per_gpu >= x[0] and p.tokens_per_s_per_user >= x[1]
               and (p.output_tokens_per_s_per_gpu, p.tokens_per_s_per_user) != x for p in points)


def non_dominated(points: list[FrontPoint]) -> list[FrontPoint]:
    """The points no other point beats in both figures, by decreasing throughput."""
    keep = [p for p in points if p.output_tokens_per_s_per_gpu > 0
            and not _dominated((p.output_tokens_per_s_per_gpu, p.tokens_per_s_per_user), points)]
    unique = {(p.output_tokens_per_s_per_gpu, p.tokens_per_s_per_user): p for p in keep}
    return sorted(unique.values(), key=lambda p: -p.output_tokens_per_s_per_gpu)


def service_front(groups, load: ServiceLoad, slo: Slo, rate_rps: float | None) -> tuple[list[FrontPoint], int]:
    """(front, groups skipped by the bound) over ``search.prepared_groups``."""
    points: list[FrontPoint] = []
    skipped = 0
    for deg, group, rep in groups:
        widest = max(group, key=lambda k: k.max_running_requests)
        throughput_bound = sustainable_rps(rep, widest, load) * load.output_tokens / rep.gpus
        lone_ms = rep.step_ns(widest, 0, 1, load.decode_context_tokens) / 1e6
        if _dominated((throughput_bound, 1000.0 / lone_ms), points):
            skipped += 1
            continue
        points = non_dominated(points + [point(c) for c in evaluate_group(deg, group, rep, load, slo, rate_rps)])
    return points, skipped
