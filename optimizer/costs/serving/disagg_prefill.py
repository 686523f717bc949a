"""TTFT of a prefill-only replica whose k queues are fed by route-on-arrival (plain Python).

A prefill replica (docs/serving-model.md, "Disaggregated serving") runs k = dp queues; the
router puts each prompt in the queue with the fewest outstanding requests when it arrives,
and a queue runs FCFS steps of the prompts waiting in it (at most C tokens, B prompts).
``metrics.predict`` with a one-token output (no decodes) gives the step of a prompt and the
utilisation rho of one queue (short prompts share a step with those that arrived during the
step under way); this module replaces its wait, which is that of one M/G/k queue (a prompt
takes the first of k servers to free), by the wait of a prompt routed on arrival:

    S_work = rho / lambda_q             server time per prompt (lambda_q = R / k per queue)
    S_busy = max(1, s / C) full         a queue's service of the prompt under way (its steps)
    P_w    = C(k, k rho)                Erlang C: every queue holds a prompt (rho for k = 1)
    W | waits = U + J S_work            U ~ uniform(0, S_busy (1 + cv^2)): the rest of the
                                        prompt under way in the joined queue (mean S_busy
                                        (1 + cv^2) / 2, the residual of a service of that
                                        cv^2); J the prompts already waiting in it
    P(J = j | waits) = (1 - r) r^j,  r = rho^k
                                        (the waiting prompts of the M/M/k queue, Q | waits ~
                                        geometric(rho), spread evenly: J = floor(Q / k))
    TTFT_q = W_q + max(1, s / C) full   (W_q from P(W > t) = P_w P(U + J S_work > t))

The transfer is added by the caller. Approximations: Erlang C for "every queue busy" under
least-loaded routing, and a residual uniform on the prompt's service (exact for prompts of
one length and one step each).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import PERCENTILES, Replica, ServiceLoad, ServiceMetrics, predict

_BISECTION_STEPS = 60
_TAIL_TERMS = 200  # terms of the geometric sum over J (r^200 is negligible for r <= 0.9)
_RELATIVE_TOLERANCE = 1e-7
_BATCH_ITERATIONS = 4


@dataclass(frozen=True)
class RoutedPrefill:
    """The figures of the TTFT law of one prefill queue (module doc), seconds."""

    p_wait: float  # P_w
    ratio: float  # r, of J's geometric law
    residual_s: float  # the bound of U
    step_s: Callable[[int], float]  # step(x, 0) of x prompt tokens, seconds
    prompt_tokens: int  # s
    budget_tokens: int  # C

    @cached_property
    def _behind(self) -> dict[int, float]:
        return {}  # behind_s by ``waiting``: the tail's bisection asks for the same terms again

    def behind_s(self, waiting: int) -> float:
        """T(J): from the start of the queue's next step to the end of the last step of a
        prompt behind ``waiting`` prompts: G whole budget steps, then the rest of the tokens
        (memoised per law)."""
        known = self._behind.get(waiting)
        if known is None:
            tokens = (waiting + 1) * self.prompt_tokens
            whole = -(-tokens // self.budget_tokens) - 1
            known = self._behind[waiting] = (whole * self.step_s(self.budget_tokens)
                                             + self.step_s(tokens - whole * self.budget_tokens))
        return known

    def tail(self, t: float) -> float:
        """P(TTFT > t)."""
        idle = (1.0 - self.p_wait) * (1.0 if t < self.behind_s(0) else 0.0)
        total, weight = 0.0, 1.0 - self.ratio
        for j in range(_TAIL_TERMS):
            rest = t - self.behind_s(j)
            if rest <= 0.0:  # this term and every further one exceed t: close the sum
                total += weight / (1.0 - self.ratio)
                break
            total += weight * max(0.0, 1.0 - rest / self.residual_s)
            weight *= self.ratio
        return idle + self.p_wait * total

    def mean_s(self) -> float:
        """E[TTFT] (J's law cut at ``_TAIL_TERMS`` terms)."""
        behind = sum((1.0 - self.ratio) * self.ratio ** j * self.behind_s(j) for j in range(_TAIL_TERMS))
        return (1.0 - self.p_wait) * self.behind_s(0) + self.p_wait * (self.residual_s / 2.0 + behind)

    def quantile_s(self, quantile: float) -> float:
        """The t with P(TTFT > t) = 1 - quantile, by bisection (the tail decreases in t)."""
        low, high = 0.0, self.residual_s + self.behind_s(1)
        while self.tail(high) > 1.0 - quantile:
            low, high = high, 2.0 * high
        for _ in range(_BISECTION_STEPS):
            mid = (low + high) / 2.0
            low, high = (mid, high) if self.tail(mid) > 1.0 - quantile else (low, mid)
        return high


def routed_prefill(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rho: float,
                   rate_per_queue: float) -> RoutedPrefill:
    """The law's figures at a queue utilisation ``rho`` (``metrics.predict``'s)."""
    k, budget, s = rep.queues, knobs.prefill_chunk_tokens, load.prompt_tokens
    ratio = rho ** k
    def step_s(tokens: int) -> float:
        return rep.step_ns(knobs, tokens, 0, load.decode_context_tokens) * 1e-9
    p_wait = q.erlang_c(k, k * rho) if k > 1 else rho
    law = RoutedPrefill(p_wait, ratio, 0.0, step_s, s, budget)
    if ratio >= 1.0:
        return law

    def under_way_s(waiting: float) -> float:  # the step(s) of a batch of 1 + waiting prompts
        batch = s * (1.0 + waiting)
        whole = max(0, math.ceil(batch / budget) - 1)
        return whole * step_s(budget) + step_s(math.ceil(batch - whole * budget))
    if s < budget:  # a step takes every prompt waiting: J are those routed in since it began
        waiting = 0.0
        for _ in range(_BATCH_ITERATIONS):
            waiting = rate_per_queue * under_way_s(waiting) / 2.0
        ratio = min(ratio, waiting / (1.0 + waiting))
    return replace(law, ratio=ratio, residual_s=under_way_s(ratio / (1.0 - ratio)) * (1.0 + load.prompt_cv2))


def predict_prefill_only(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float) -> ServiceMetrics:
    """Metrics of a prefill replica at ``rate_rps`` (``load``: the prefill view, one output
    token): ``metrics.predict`` with its TTFT replaced by the route-on-arrival one."""
    m = predict(rep, knobs, load, rate_rps)
    if not m.stable or rate_rps <= 0.0:
        return m
    law = routed_prefill(rep, knobs, load, m.utilization, rate_rps / rep.queues)
    if law.ratio >= 1.0:  # every queue always busy: the wait grows without bound
        inf = math.inf
        return replace(m, ttft_mean_s=inf, ttft_p50_s=inf, ttft_p90_s=inf, ttft_p99_s=inf, e2e_p90_s=inf)
    ttft = {p: law.quantile_s(p / 100) for p in PERCENTILES}
    return replace(m, ttft_mean_s=law.mean_s(), ttft_p50_s=ttft[50], ttft_p90_s=ttft[90], ttft_p99_s=ttft[99],
                   e2e_p90_s=ttft[90])


def largest_rate(ok, high_rps: float) -> float:
    """Largest rate in [0, high_rps] with ok(rate), for ok true below a threshold and false
    above; bisection to ``_RELATIVE_TOLERANCE`` of ``high_rps`` (the lower end)."""
    if high_rps <= 0.0:
        return 0.0
    if ok(high_rps):
        return high_rps
    low, high = 0.0, high_rps
    while high - low > _RELATIVE_TOLERANCE * high_rps:
        mid = (low + high) / 2.0
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low
