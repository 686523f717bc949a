"""TTFT of a prefill-only replica whose k queues are fed by route-on-arrival (plain Python).

A prefill replica (docs/serving-model.md, "Disaggregated serving") runs k = dp queues; the
router puts each prompt in the queue with the fewest outstanding requests when it arrives,
and a queue runs FCFS steps of the prompts waiting in it (at most C tokens, B prompts).
``metrics.predict`` with a one-token output (no decodes) gives the step of a prompt and the
utilisation rho of one queue (short prompts share a step with those that arrived during the
step under way); this module replaces its wait, which is that of one M/G/k queue (a prompt
takes the first of k servers to free), by the wait of a prompt routed on arrival:

    P_w    = C(k, k rho)                Erlang C: every queue holds a prompt (rho for k = 1)
    W | waits = U + T(J)                U the rest of the step under way in the joined queue,
                                        J the prompts already waiting in it
    P(J = j | waits) = (1 - r) r^j      r = rho^k (the waiting prompts of the M/M/k queue,
                                        Q | waits ~ geometric(rho), spread evenly: J =
                                        floor(Q / k))
    TTFT_q = T(J) + U 1{waits}          (the q-quantile of that law; T(J) the steps of J + 1
                                        prompts, FCFS within C tokens)

Prompts of at least C tokens (s >= C): U ~ uniform(0, T_u (1 + cv^2)), T_u the steps of
1 + E[J] prompts. Shorter prompts (s < C: a step takes every prompt waiting):
- J are the prompts routed to the joined queue since its step began. A busy queue is sent
  prompts only while every queue is busy (an idle one takes them otherwise), so per unit of
  its busy time at lambda_b = lambda_q P_w / rho (the arrivals that find all k busy, Lambda
  P_w, shared by k queues each busy a fraction rho of the time); their mean is m = lambda_b
  T_u / 2 (half the step under way, T_u the steps of 1 + m prompts: 4 rounds of that fixed
  point from m = 0) and r is at most m / (1 + m);
- the step under way holds N = 1 + J' prompts, J' of J's law (those waiting when it began),
  and the arrival lands in it with probability proportional to its length, so U is uniform
  on (0, 2 E[R]) with E[R] = E[T^2] / (2 E[T]) the mean rest of a length-biased step:
  2 E[R] = sum_n P(N = n) T(n - 1)^2 / sum_n P(N = n) T(n - 1) + step(s) cv^2 (the
  prompt lengths' spread within the step adds n sigma^2 to its variance).

The transfer is added by the caller. Approximations: Erlang C for "every queue busy" under
least-loaded routing, a uniform residual, and J independent of U.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving.disagg_mdk import md_k_decay, md_k_wait_probability
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import (
    PERCENTILES,
    Replica,
    ServiceLoad,
    ServiceMetrics,
    Slo,
    meets,
    predict,
)

_BISECTION_STEPS = 60
_TAIL_TERMS = 200  # terms of the geometric sum over J (r^200 is negligible for r <= 0.9)
_RELATIVE_TOLERANCE = 1e-7
_NEGLIGIBLE = 1e-15
_BATCH_ITERATIONS = 4


def _poisson_at_least(n: int, mean: float) -> float:
    """P(Poisson(mean) >= n)."""
    if n <= 0:
        return 1.0
    term = total = math.exp(-mean)
    for i in range(1, n):
        term *= mean / i
        total += term
    return max(0.0, 1.0 - total)


@dataclass(frozen=True)
class RoutedPrefill:
    """The figures of the TTFT law of one prefill queue (module doc), seconds."""

    p_wait: float  # P_w
    ratio: float  # r, of J's geometric law
    residual_s: float  # the bound of U
    step_s: Callable[[int], float]  # step(x, 0) of x prompt tokens, seconds
    prompt_tokens: int  # s
    budget_tokens: int  # C
    joining_rps: float = 0.0  # k lambda_b: prompts routed to the busy queues while one waits, per second
    deal: int = 1  # k: its queue takes every k-th of them (K = floor(N / k))

    @cached_property
    def _own(self) -> dict[tuple[int, int], float]:
        return {}  # own_s by (waiting, joined): the tail's bisection asks for the same terms again

    def own_s(self, waiting: int, joined: int = 0) -> float:
        """T(J, K): from the start of the queue's next step to the end of the step that
        completes a prompt behind ``waiting`` prompts and ahead of ``joined`` (FCFS within C
        tokens): G whole budget steps, then a step of the rest of the tokens up to it plus
        those behind it, at most C (memoised per law)."""
        known = self._own.get((waiting, joined))
        if known is None:
            s, budget = self.prompt_tokens, self.budget_tokens
            tokens = (waiting + 1) * s
            whole = -(-tokens // budget) - 1
            last = min(budget, (waiting + 1 + joined) * s - whole * budget)
            known = self._own[(waiting, joined)] = whole * self.step_s(budget) + self.step_s(last)
        return known

    def behind_s(self, waiting: int) -> float:
        """T(J) = T(J, 0)."""
        return self.own_s(waiting, 0)

    @cached_property
    def _caps(self) -> dict[int, int]:
        return {}

    def _joined_cap(self, waiting: int) -> int:
        """The fewest prompts behind that fill the step completing this one (more add nothing),
        cut where P(K >= n) is negligible for every U; 0 without joiners (memoised)."""
        known = self._caps.get(waiting)
        if known is None:
            s, budget = self.prompt_tokens, self.budget_tokens
            whole = -(-((waiting + 1) * s) // budget) - 1
            fill = max(0, -(-((whole + 1) * budget) // s) - (waiting + 1))
            most = self.joining_rps * self.residual_s / self.deal
            known = self._caps[waiting] = (min(fill, math.ceil(most + 10.0 * math.sqrt(most) + 10.0))
                                           if most > 0.0 else 0)
        return known

    @cached_property
    def _at_top(self) -> dict[int, float]:
        return {}  # G(n, c U_max) by n

    def _share(self, kappa: int, low: float) -> float:
        """int_low^U_max P(K = kappa | u) du / U_max with K = floor(N / d), N ~ Poisson(c u):
        sum over n = kappa d .. kappa d + d - 1 of (G(n + 1, c U_max) - G(n + 1, c low)) / (c U_max),
        G(n, x) = P(Poisson(x) >= n) (int_0^x P(Poisson(y) = n) dy = G(n + 1, x))."""
        c, top, d = self.joining_rps, self.residual_s, self.deal
        total = 0.0
        for n in range(kappa * d + 1, kappa * d + d + 1):
            at_top = self._at_top.get(n)
            if at_top is None:
                at_top = self._at_top[n] = _poisson_at_least(n, c * top)
            total += at_top - _poisson_at_least(n, c * low)
        return total / (c * top)

    def _over(self, waiting: int, t: float) -> float:
        """P(U + T(waiting, K) > t), U ~ uniform(0, residual_s), K | U as ``_share`` says."""
        top = self.residual_s
        cap = self._joined_cap(waiting)
        if cap == 0:
            rest = t - self.own_s(waiting, 0)
            return 1.0 if rest <= 0.0 else max(0.0, 1.0 - rest / top) if top > 0.0 else 0.0
        total = 0.0
        for kappa in range(cap):
            total += self._share(kappa, min(max(t - self.own_s(waiting, kappa), 0.0), top))
        low = min(max(t - self.own_s(waiting, cap), 0.0), top)  # K >= cap: P(U > low) less the others
        return total + max(0.0, 1.0 - low / top - sum(self._share(kappa, low) for kappa in range(cap)))

    def _mean_own_s(self, waiting: int) -> float:
        """E[T(waiting, K)] over U and K."""
        cap = self._joined_cap(waiting)
        if cap == 0:
            return self.own_s(waiting, 0)
        shares = [self._share(kappa, 0.0) for kappa in range(cap)]
        return (sum(w * self.own_s(waiting, kappa) for kappa, w in enumerate(shares))
                + max(0.0, 1.0 - sum(shares)) * self.own_s(waiting, cap))

    def length_biased_step_s(self) -> float:
        """E[T^2] / E[T] of the step under way, T = T(J') with J' of J's law (twice the mean
        rest of the step a uniformly random instant falls in)."""
        first = second = 0.0
        weight = 1.0 - self.ratio
        for j in range(_TAIL_TERMS):
            t = self.behind_s(j)
            first, second = first + weight * t, second + weight * t * t
            weight *= self.ratio
            if weight < _NEGLIGIBLE:  # the rest of J's law adds nothing a float can hold
                break
        return second / first

    def tail(self, t: float) -> float:
        """P(TTFT > t)."""
        idle = (1.0 - self.p_wait) * (1.0 if t < self.behind_s(0) else 0.0)
        total, weight = 0.0, 1.0 - self.ratio
        for j in range(_TAIL_TERMS):
            if t <= self.behind_s(j):  # this term and every further one exceed t: close the sum
                total += weight / (1.0 - self.ratio)
                break
            total += weight * self._over(j, t)
            weight *= self.ratio
            if weight < _NEGLIGIBLE:  # what is left of J's law (weight / (1 - r)) is negligible
                break
        return idle + self.p_wait * total

    def mean_s(self) -> float:
        """E[TTFT] (J's law cut at ``_TAIL_TERMS`` terms)."""
        behind = sum((1.0 - self.ratio) * self.ratio ** j * self._mean_own_s(j) for j in range(_TAIL_TERMS)
                     if self.ratio ** j > 1e-15 or j == 0)
        return (1.0 - self.p_wait) * self.behind_s(0) + self.p_wait * (self.residual_s / 2.0 + behind)

    def quantile_s(self, quantile: float) -> float:
        """The t with P(TTFT > t) = 1 - quantile, by bisection (the tail decreases in t)."""
        low, high = 0.0, self.residual_s + self.own_s(1, self._joined_cap(1))
        while self.tail(high) > 1.0 - quantile:
            low, high = high, 2.0 * high
        for _ in range(_BISECTION_STEPS):
            mid = (low + high) / 2.0
            low, high = (mid, high) if self.tail(mid) > 1.0 - quantile else (low, mid)
        return high


def waiting_law(servers: int, rho: float, cv2: float) -> tuple[float, float]:
    """(P_w, r): M/D/k's (prompts of one length: one fixed service time; ``disagg_mdk``)
    P(every queue busy) and per-queue tail ratio sigma^k, linear in cv^2 toward M/M/k's
    (Erlang C, rho^k), M/M/k's from cv^2 = 1 on."""
    k, weight = servers, min(max(cv2, 0.0), 1.0)
    if rho <= 0.0:
        return 0.0, 0.0
    p_md, r_md = md_k_wait_probability(k, k * rho), md_k_decay(rho) ** k
    p_mm, r_mm = (q.erlang_c(k, k * rho) if k > 1 else rho), rho ** k
    return (1.0 - weight) * p_md + weight * p_mm, (1.0 - weight) * r_md + weight * r_mm


def routed_prefill(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rho: float,
                   rate_per_queue: float) -> RoutedPrefill:
    """The law's figures at a queue utilisation ``rho`` (``metrics.predict``'s)."""
    k, budget, s = rep.queues, knobs.prefill_chunk_tokens, load.prompt_tokens
    def step_s(tokens: int) -> float:
        return rep.step_ns(knobs, tokens, 0, load.decode_context_tokens) * 1e-9
    if rho >= 1.0:
        return RoutedPrefill(1.0, 1.0, 0.0, step_s, s, budget)
    p_wait, ratio = waiting_law(k, rho, load.prompt_cv2)
    law = RoutedPrefill(p_wait, ratio, 0.0, step_s, s, budget)

    def under_way_s(waiting: float) -> float:  # the step(s) of a batch of 1 + waiting prompts
        batch = s * (1.0 + waiting)
        whole = max(0, math.ceil(batch / budget) - 1)
        return whole * step_s(budget) + step_s(math.ceil(batch - whole * budget))
    if s >= budget:
        return replace(law, residual_s=under_way_s(ratio / (1.0 - ratio)) * (1.0 + load.prompt_cv2))
    busy_rate = rate_per_queue * p_wait / rho  # lambda_b: prompts sent to a busy queue
    waiting = 0.0
    for _ in range(_BATCH_ITERATIONS):
        waiting = busy_rate * under_way_s(waiting) / 2.0
    law = replace(law, ratio=min(ratio, waiting / (1.0 + waiting)), joining_rps=k * busy_rate, deal=k)
    return replace(law, residual_s=law.length_biased_step_s() + step_s(s) * load.prompt_cv2)

def predict_prefill_only(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float) -> ServiceMetrics:
    """Metrics of a prefill replica at ``rate_rps`` (``load``: the prefill view, one output
    token): ``metrics.predict`` with its TTFT replaced by the route-on-arrival one."""
    m = predict(rep, knobs, load, rate_rps, with_ttft=rate_rps <= 0.0)  # the TTFT is replaced below
    if not m.stable or rate_rps <= 0.0:
        return m
    law = routed_prefill(rep, knobs, load, m.utilization, rate_rps / rep.queues)
    if law.ratio >= 1.0:  # every queue always busy: the wait grows without bound
        inf = math.inf
        return replace(m, ttft_mean_s=inf, ttft_p50_s=inf, ttft_p90_s=inf, ttft_p99_s=inf, e2e_p90_s=inf)
    ttft = {p: law.quantile_s(p / 100) for p in PERCENTILES}
    return replace(m, ttft_mean_s=law.mean_s(), ttft_p50_s=ttft[50], ttft_p90_s=ttft[90], ttft_p99_s=ttft[99],
                   e2e_p90_s=ttft[90])


def meets_prefill_slo(rep: Replica, knobs: ServingKnobs, load: ServiceLoad, rate_rps: float, slo: Slo) -> bool:
    """``meets(predict_prefill_only(...), slo, load)`` for a prefill SLO (TTFT only; the prefill
    view has one output token, so its E2E is its TTFT) without the percentiles it does not
    ask for: TTFT_q <= max_ttft_s exactly when P(TTFT > max_ttft_s) <= 1 - q (the tail
    decreases), one evaluation of the tail instead of three bisections on it."""
    if slo.max_tpot_ms is not None or slo.max_e2e_latency_s is not None:
        return meets(predict_prefill_only(rep, knobs, load, rate_rps), slo, load)
    m = predict(rep, knobs, load, rate_rps, with_ttft=rate_rps <= 0.0)
    if not m.stable:
        return False
    if slo.max_ttft_s is None:
        return True
    if rate_rps <= 0.0:
        return m.ttft_at(slo.percentile) <= slo.max_ttft_s
    if m.utilization >= 1.0:
        return False
    law = routed_prefill(rep, knobs, load, m.utilization, rate_rps / rep.queues)
    return law.tail(slo.max_ttft_s) <= 1.0 - slo.percentile / 100


def largest_rate_below(ok, high_rps: float) -> float:
    """Largest rate in [0, high_rps] with ok(rate), for ok true below a threshold and false
    above; bisection to ``_RELATIVE_TOLERANCE`` of ``high_rps`` (the lower end). Capped at a
    known capacity, unlike ``metrics.largest_rate``, which doubles from a start rate."""
    if high_rps <= 0.0:
        return 0.0
    if ok(high_rps):
        return high_rps
    low, high = 0.0, high_rps
    while high - low > _RELATIVE_TOLERANCE * high_rps:
        mid = (low + high) / 2.0
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low
