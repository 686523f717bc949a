"""The throughput-interactivity front of a service: output tokens/s per GPU (max) against
tokens/s per user (max), every candidate at the rate its objective names:

- ``goodput``: at its goodput rate (the highest rate at which it meets the SLOs, so every
  point is a deployment one could run);
- ``throughput``: at its sustainable rate (its capacity, latency aside).

Groups of knob tuples are skipped when a bound on their points is dominated by a point
already found: throughput <= sustainable rate of the widest tuple x output tokens / GPUs
(goodput <= sustainable rate), and tokens/s per user <= 1000 / (the step of one lone decode,
ms), since TPOT never falls below it. Once ``out_of_time()`` is true (checked before each
group after the first) the remaining groups are counted as unvisited and not evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from optimizer.costs.serving.candidates import ServiceCandidate, evaluate_group
from optimizer.costs.serving.metrics import ServiceLoad, ServiceMetrics, Slo, predict, sustainable_rps

FRONT_OBJECTIVES = ("goodput", "throughput")


@dataclass(frozen=True)
class FrontPoint:
    candidate: ServiceCandidate
    output_tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    at: ServiceMetrics  # the metrics at the point's rate


@dataclass(frozen=True)
class Front:
    """The non-dominated points, and how many groups were skipped by the bound or left
    unvisited by the time limit."""

    points: list[FrontPoint]
    skipped: int
    unvisited: int


def point(c: ServiceCandidate, objective: str = "goodput", rep=None, load: ServiceLoad | None = None) -> FrontPoint:
    """The candidate at its goodput rate, or (``throughput``) at its sustainable rate, which
    needs the replica and the load to predict the metrics there."""
    if objective == "goodput":
        m = c.at_goodput
        return FrontPoint(c, c.goodput_rps * c.output_tokens / c.gpus, m.tokens_per_s_per_user, m)
    m = predict(rep, c.knobs, load, c.sustainable_rps)
    return FrontPoint(c, c.sustainable_rps * c.output_tokens / c.gpus, m.tokens_per_s_per_user, m)


def _dominated(x: tuple[float, float], points: list[FrontPoint]) -> bool:
    return any(p.output_tokens_per_s_per_gpu >= x[0] and p.tokens_per_s_per_user >= x[1]
               and (p.output_tokens_per_s_per_gpu, p.tokens_per_s_per_user) != x for p in points)


def non_dominated(points: list[FrontPoint]) -> list[FrontPoint]:
    """The points no other point beats in both figures, by decreasing throughput."""
    keep = [p for p in points if p.output_tokens_per_s_per_gpu > 0
            and not _dominated((p.output_tokens_per_s_per_gpu, p.tokens_per_s_per_user), points)]
    unique = {(p.output_tokens_per_s_per_gpu, p.tokens_per_s_per_user): p for p in keep}
    return sorted(unique.values(), key=lambda p: -p.output_tokens_per_s_per_gpu)


def service_front(groups, load: ServiceLoad, slo: Slo, rate_rps: float | None, objective: str = "goodput",
                  out_of_time: Callable[[], bool] | None = None) -> Front:
    """The front over ``search.prepared_groups`` for ``objective`` (module doc)."""
    if objective not in FRONT_OBJECTIVES:
        raise ValueError(f"objective={objective!r}")
    points: list[FrontPoint] = []
    skipped = 0
    for visited, (deg, group, rep) in enumerate(groups):
        if visited and out_of_time is not None and out_of_time():
            return Front(points, skipped, len(groups) - visited)
        widest = max(group, key=lambda k: k.max_running_requests)
        throughput_bound = sustainable_rps(rep, widest, load) * load.output_tokens / rep.gpus
        lone_ms = rep.step_ns(widest, 0, 1, load.decode_context_tokens) / 1e6
        if _dominated((throughput_bound, 1000.0 / lone_ms), points):
            skipped += 1
            continue
        found = [point(c, objective, rep, load) for c in evaluate_group(deg, group, rep, load, slo, rate_rps)]
        points = non_dominated(points + found)
    return Front(points, skipped, 0)
