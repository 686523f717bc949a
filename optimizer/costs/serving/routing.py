"""Least-loaded routing on k > 1 queues as the serving model uses it (plain Python and
numpy; docs/serving-model.md, "Steady state"): the engine's router counts OUTSTANDING
requests (decodes and prompts not yet at their first token), so the decodes a new prompt's
steps hold (n_a), those a decoding request sees (n') and the share of queues holding a decode
come from the outstanding count per queue a = n + p (``queueing.jsq_outstanding``, mean-field
least-loaded routing), and the prompt steps right after a decode's own from the refill of the
queue that is prefilling (``queueing.refill_wait_tail``, ``decode_life.chain_excess``), and
the spread of the deployment's outstanding total, over-dispersed by the pace's feedback
(``total_count_gain``, ``life_variance_share``). One
queue (k = 1) does not route and does not use this module.
"""

from __future__ import annotations

import math

import numpy as np

from optimizer.costs.serving import queueing as q
from optimizer.costs.serving.decode_life import chain_excess


def routed(running: float, prefilling: float, waiting: float, replicas: int,
           total_dispersion: float = 0.0) -> tuple[float, float, float]:
    """(n_a, n', busy) on k > 1 queues when the router counts outstanding requests: per
    queue a = n + p, p = prefilling + waiting prompts (``queueing.jsq_outstanding``).
    n_a: of the c_a requests of the joined queue (mean E[min]) those that decode in its first
    step: the prompts ahead of it are prefilled before it and decode then too, but a wait W
    lets some finish: a share T_d / (T_d + W) = n / (n + lambda W) of them stay (all of them
    without a wait); at most n (the least-loaded queue holds no more than the mean).
    n' = 1 + (c' - 1) n / a: the others of a decoding request's queue (c'
    itself included) decode in proportion. busy = share of queues holding a decode,
    sum_c P(c) (1 - (p / a)^c). ``total_dispersion`` v (the deployment's outstanding
    total has variance v k a; 0 leaves it out): the mean field holds each queue's mean at a
    (k -> inf), but with k queues it moves with the total, T / k of variance v a / k, so by
    the law of total variance a queue's count varies by v a / k more and a request's queue
    holds c' + v / k (``total_seen_excess``)."""
    prompts = prefilling + waiting
    load = running + prompts
    if load <= 0.0:
        return 0.0, 1.0, 0.0
    joined, _, seen, busy = q.jsq_outstanding(load, replicas, prompts / load)
    stay = running / (running + waiting) if running > 0.0 else 1.0
    seen += total_seen_excess(total_dispersion, replicas)
    return min(joined * stay, running), 1.0 + (seen - 1.0) * running / load, busy


def total_seen_excess(total_dispersion: float, replicas: int) -> float:
    """What the deployment's moving total adds to the outstanding count of a request's own
    queue, E[c^2] / E[c]: v / k when the total (mean k a) has variance v k a. The mean field
    (``queueing.jsq_outstanding``) spreads the queues about a fixed mean a; the total moves
    them together, c = T / k + (c - T / k), the two parts uncorrelated by symmetry, so
    Var(c) gains Var(T) / k^2 = v a / k and E[c^2] / E[c] = a + Var(c) / a gains v / k.
    Measured (one seed, the decodes' time-averaged variance / mean per queue against the mean
    field's plus v / k with the simulated v): ``random_0_01`` at 20 % 0.90 / 0.94,
    ``_17`` at 24 % 0.84 / 0.84, ``_18`` at 28 % 0.65 / 0.54, ``_29`` at 32 % 0.70 / 0.58,
    ``_02`` at 39 % 0.77 / 0.60, ``_26`` at 29 % 0.30 / 0.28, ``_19`` at 47 % 0.16 / 0.14,
    ``10b_moe_service`` at 60 % 0.22 / 0.12 (the mean field alone: 0.12-0.44 where
    0.16-0.90 is measured)."""
    return max(0.0, total_dispersion) / replicas


def routed_at(running: float, prefilling: float, waiting: float, replicas: int, z: float,
              variance_share: float, total_dispersion: float = 0.0) -> tuple[float, float, float]:
    """``routed`` with the deployment's outstanding count at the standard-normal quantile z
    of its spread: k a + z sqrt(v k a) (Poisson, M/G/inf: v = 1 at an instant, 2/3 averaged
    over a life of fixed length, M/D/inf; more when the pace feeds back,
    ``life_variance_share``), each kind scaled alike; never below the mean. A request
    sees the total size-biased, ``total_dispersion`` per queue above it (``routed``)."""
    load = running + prefilling + waiting
    scale = 1.0 + max(0.0, z) * math.sqrt(variance_share / (replicas * load)) if load > 0.0 else 1.0
    return routed(scale * running, scale * prefilling, scale * waiting, replicas, total_dispersion)


def routed_excess(rate: float, replicas: int, prompt_step_s: float, joined: float, running: float,
                  share: float, lives: np.ndarray, outstanding: float | None = None) -> np.ndarray:
    """e(L) on k > 1 queues: least-loaded routing sends a prompt to the queue that is
    prefilling one only when that queue falls below the others during the step (one of its
    n_a decodes finishes, rate n_a / life, life = n / lambda by Little's law) and the next
    arrival of the deployment comes before the step ends: the refill of
    ``queueing.refill_wait_tail``, so after a prompt step another follows with
    b = P(at least one refill during it) = 1 - e^{-delta h(p)} (Poisson departures; measured
    on ``random_0_02``: 0.168 against the model's 0.16), at most the one-queue chain's
    1 - e^{-lambda p} (with many decodes every queue loses some during the step, and the
    prefilling one is no likelier to be the least than the others); given ``outstanding``
    (a = n + p per queue), at least the chance that an arrival joins it by a tie at its count
    (``queueing.jsq_joins_during``): either way suffices, so b is at least the larger (the
    tie dominates on few queues at low load: ``random_0_17`` at 25 %, 0.085 measured, tie
    0.077, refill 0.045; the refill at high load: ``_27`` at 82 %, 0.626, 0.368, 0.611);
    and after a decode step with a, from the stationary share f0 = K n_a / (D - 1):
    a = f0 (1 - b) / (1 - f0) (``decode_life.chain_excess``)."""
    if running <= 0.0 or share <= 0.0 or share >= 1.0:
        return np.zeros(len(lives))
    b = _joins_during(rate, replicas, prompt_step_s, joined, running, outstanding)
    return chain_excess(share * (1.0 - b) / (1.0 - share), b, lives)


def _joins_during(rate: float, replicas: int, span_s: float, joined: float, running: float,
                  outstanding: float | None) -> float:
    """b: P(a prompt joins the queue that took one, during ``span_s`` after): the refill
    1 - e^{-delta h(S)} (one of its n_a decodes finishes, delta = n_a lambda / n, and the next
    arrival joins it) or, given ``outstanding`` (a per queue), a tie at its count
    (``queueing.jsq_joins_during``), whichever is larger; at most 1 - e^{-lambda S}, the
    one-queue chance (``routed_excess``, ``queued_behind_excess``)."""
    refills = q.refill_wait_tail(0.0, span_s, joined * rate / running, rate * replicas)
    b = -math.expm1(-refills)
    if outstanding is not None:
        b = max(b, q.jsq_joins_during(outstanding, replicas, rate, span_s))
    return min(b, -math.expm1(-rate * span_s))


def queued_behind_excess(rate: float, replicas: int, prefill_s: float, steps: float, joined: float, running: float,
                         share: float, lives: np.ndarray, outstanding: float) -> np.ndarray:
    """e(L) on k > 1 queues, prompts longer than the room: a prompt that joins the queue
    during a request's own prefill (``prefill_s``, K = ``steps`` prompt steps) waits behind
    it and is prefilled right after its first token, K prompt steps at the start of its life;
    it joins with b = the larger of the refill 1 - e^{-delta h(S)} and the tie
    (``queueing.jsq_joins_during``), at most 1 - e^{-lambda S} (as ``routed_excess``), first
    order (one such prompt): e = b K (1 - f0), at most (1 - f0) L."""
    if running <= 0.0 or share <= 0.0 or share >= 1.0:
        return np.zeros(len(lives))
    b = _joins_during(rate, replicas, prefill_s, joined, running, outstanding)
    return np.minimum(b * steps * (1.0 - share), (1.0 - share) * np.asarray(lives, dtype=float))


def total_count_gain(life_s: float, prompt_step_s: float, steps: float, joined: float, per_decode_s: float,
                     others: float, life_steps: float) -> float:
    """G, the loop gain of the deployment's outstanding total on k > 1 queues: a decode
    lives ``life_steps`` (E[L]) steps in ``life_s`` ((D - 1) TPOT) on average, so the
    decodes of a queue leave at rate (their count) / ``life_s``. One request more
    stretches the steps of the ONE queue the router sends it to: its prompt's K (``steps``)
    steps, each ``prompt_step_s`` (Delta) longer than a decode step, hold up the n_a
    (``joined``) decodes of that queue, and its decode adds b (``per_decode_s``) to each
    of its E[L] steps, holding up the n' - 1 (``others``) others of that queue (a
    decoding request's view: least-loaded routing sends it where the fewest are, so not
    the mean n). Held up that long, they leave later and the total stays higher by
    G = (n_a Delta K + (n' - 1) b E[L]) / ((D - 1) TPOT) requests per request more:
    the linear-noise variance of the total is k a / (1 - G) (``life_variance_share``).
    On one queue (n_a = n' - 1 = n, n / ((D - 1) TPOT) = lambda) it is the gain of
    ``decode_life.running_count_dispersion``. Capped to [0, 0.9] (as there)."""
    if life_s <= 0.0:
        return 0.0
    gain = (joined * prompt_step_s * steps + others * per_decode_s * life_steps) / life_s
    return min(0.9, max(0.0, gain))


def life_variance_share(gain: float) -> float:
    """Variance of the deployment's outstanding total averaged over one life, per unit of
    its mean k a (``routed_at``'s ``variance_share``): its Poisson part (M/D/inf: the
    triangular autocovariance of fixed lives averages to 2/3 over a life) plus the part
    the loop adds, G / (1 - G) (``total_count_gain``), which relaxes at the loop's rate
    (1 - G) / T (linear noise: a deviation lowers the departures by only 1 - G of what
    it would at a fixed pace; T the life), an exponential autocovariance whose average
    over a life keeps 2 (x - 1 + e^{-x}) / x^2 of it, x = 1 - G (the mean of
    e^{-x |u - v|} over u, v uniform on (0, 1)): 2/3 + G / (1 - G) 2 (x - 1 + e^{-x}) / x^2."""
    if gain <= 0.0:
        return 2.0 / 3.0
    x = 1.0 - gain
    return 2.0 / 3.0 + gain / x * 2.0 * (x - 1.0 + math.exp(-x)) / (x * x)
