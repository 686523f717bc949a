"""The prompt steps in one decoding request's life (plain Python and numpy;
docs/serving-model.md, "TPOT"): a request's TPOT is its decode time over its L = D' - 1
decode steps, so it is set by how many of those steps carry a prompt chunk, and short
outputs (small L) spread it most.

Excess after the own prompt (e(L): a decode's life starts right after its own prompt's last
step, so its first steps carry prompts more often than the stationary share pi).
With k > 1 queues (``routing.routed_excess`` gives a and b of ``chain_excess``), prompts
shorter than the room: the engine admits at each step the prompts that arrived at its queue
during the step before, so whether a step carries prompts is a two-state chain. After a
step without prompts a prompt step follows with probability a, after a prompt step with
b. Its stationary share is pi = a / (a + 1 - b); step i of the life carries a prompt with
probability pi + (b - pi) r^(i-1), r = b - a: over L steps, e(L) = (b - pi) (1 - r^L) /
(1 - r) prompt steps more than the stationary count.
On one queue (``busy_period_excess``) the run of prompt steps a life starts in is the rest of
the prefill server's busy period at a departure (M/G/1), longer than the chain's geometric
run b / (1 - b): those that arrived during the prompt's wait and its prefill are queued
behind it, and a long busy period starts more lives (measured on the simulator, prompt steps
right after a first token: 0.43 on ``random_0_16`` at 21 % where the busy period gives 0.44,
7.96 against 7.91 on ``random_0_28`` at 83 %, 0.74 against 0.81 on ``random_0_13`` at 79 %,
3.0-6.6 against 2.6-4.5 on ``random_0_23``, where the chain's geometric run gave 1.2).

The count over a life of L steps: prompt-step events Poisson with mean (f L + e(L)) / K'
(f the stationary share, K' = max(1, K) steps per prompt: a prompt longer than the room
takes K consecutive steps, shorter ones share a step), each event K' steps. Over the
requests, L follows the output lengths (equal-probability points); the share's quantile
is read off the mixture (k > 1 queues, ``share_quantile``).

On one queue the TPOT percentile is the life's decode time as shot noise
(``one_queue_tpot_quantile_s``); the decodes already running when a life starts are a count
over-dispersed by the pace's feedback (``running_count_dispersion``: a request more lengthens
the steps, longer lives hold more arrivals), variance n / (1 - G) instead of Poisson's n.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from optimizer.costs.serving import queueing as q


def busy_period_excess(rho: float, steps: float, cv2: float, share: float, lives: np.ndarray) -> np.ndarray:
    """e(L) on one queue for each life of L in ``lives`` steps: the prompt steps of a decode's
    life beyond the stationary count ``share`` (pi = f0) L, from the prefill busy period its
    life starts in (module doc). Its first token ends its prompt's prefill, and the prompts
    that came during its wait and its prefill are queued behind it (M/G/1: a departure leaves
    behind those that came during its sojourn, lambda (W + S) on average), each opening a
    sub-busy period of S / (1 - rho): S = K p the prefill time of a prompt (K = ``steps``
    prompt steps of length p), W = (1 + cv^2) rho S / (2 (1 - rho)) (Pollaczek-Khinchine). So
    R = K / (1 - rho) lambda (W + S) = K rho / (1 - rho) (1 + (1 + cv^2) rho / (2 (1 - rho)))
    prompt steps follow its first token (size-biased: a long busy period starts more lives),
    against a mean run of M = K / (1 - rho). Then the steps return to the share pi as a
    two-state chain with runs of mean M does (r = 1 - 1 / ((1 - pi) M)): starting from a step
    without a prompt it holds pi / (1 - r) = pi (1 - pi) M prompt steps fewer than pi per
    step. Over a long life e = (1 - pi) R - pi (1 - pi) M = (1 - pi) (R - pi M) (the chain's
    own excess (b - pi) / (1 - r) when R is its geometric run b / (1 - b)), over L steps
    e (1 - r^L), at most (1 - pi) L (every step of the life) and at least 0; (1 - pi) L at
    rho >= 1."""
    lives = np.asarray(lives, dtype=float)
    if rho <= 0.0:
        return np.zeros(len(lives))
    if rho >= 1.0:
        return (1.0 - share) * lives
    run = steps / (1.0 - rho)  # M
    rest = run * rho * (1.0 + (1.0 + cv2) * rho / (2.0 * (1.0 - rho)))  # R
    excess = (1.0 - share) * (rest - share * run)
    if excess <= 0.0:
        return np.zeros(len(lives))
    relax = max(0.0, 1.0 - 1.0 / ((1.0 - share) * run))  # r
    return np.minimum(excess * (1.0 - relax**lives), (1.0 - share) * lives)


def chain_excess(a: float, b: float, steps: np.ndarray) -> np.ndarray:
    """e(L) = (b - pi) (1 - r^L) / (1 - r), pi = a / (a + 1 - b), r = b - a, for each L in
    ``steps``: the prompt steps of a life of L steps started right after a prompt step, over
    the stationary count, for the two-state chain (module doc); 0 when b <= pi."""
    pi = a / (a + 1.0 - b)
    r = b - a
    if b <= pi or r >= 1.0:
        return np.zeros(len(steps))
    return (b - pi) * (1.0 - r ** np.asarray(steps, dtype=float)) / (1.0 - r)


def steps_per_prompt(lengths: np.ndarray, room: float, waiting: float) -> np.ndarray:
    """K per prompt of ``lengths`` tokens (equally likely) longer than the room on average:
    a prompt's chunks fill floor(s / room) steps and its last step holds the rest; that
    step's free room (ceil(s / room) - s / room of a step) is taken by the next prompt only
    if it is already queued when the step starts, which a prompt is with probability
    ``waiting`` (the prefill utilisation rho: an arrival finds the prefill busy with
    probability rho, PASTA): K = s / room + (1 - rho) (ceil(s / room) - s / room)."""
    whole = np.maximum(1.0, np.ceil(lengths / room - 1e-9))
    return lengths / room + (1.0 - min(1.0, waiting)) * (whole - lengths / room)


def prompts_per_prompt_step(rate: float, decode_step_s: float, busy: float,
                            prompt_step_s: Callable[[float], float]) -> float:
    """m: the mean prompts of a prompt step over the steps (the decodes' view; a prompt's own
    step is length-biased and holds more, ``steady_state.prompt_step_tokens``), prompts shorter
    than the room. Gated admission: a step takes the prompts that arrived during the step
    before, so after a prompt step of length p(m) another follows with b = 1 - e^{-lambda p};
    after a step without prompts, with a = busy (1 - e^{-lambda d}) + 1 - busy (a queue
    without decodes idles until the next arrival; ``busy`` = P(it holds one)). The steps
    alternate as a two-state chain, prompt steps a share pi = a / (a + 1 - b) of them, of
    mean length E[T] = pi p + (1 - pi) (busy d + (1 - busy) / lambda); every prompt is in
    one prompt step, so m = lambda E[T] / pi (at least 1). Fixed point in m from m = 1
    (p grows with m)."""
    if rate <= 0.0:
        return 1.0
    a = busy * -math.expm1(-rate * decode_step_s) + (1.0 - busy)
    between_s = busy * decode_step_s + (1.0 - busy) / rate
    m = 1.0
    for _ in range(30):
        step_s = prompt_step_s(m)
        b = -math.expm1(-rate * step_s)
        pi = a / (a + 1.0 - b)
        nxt = max(1.0, rate * (pi * step_s + (1.0 - pi) * between_s) / pi)
        if abs(nxt - m) <= 1e-6 * m:
            return nxt
        m = nxt
    return m


def share_quantile(steps: np.ndarray, mean_steps: np.ndarray, per_event: float, quantile: float) -> float:
    """The ``quantile`` over requests (equally likely lives of ``steps`` decode steps, each
    with ``mean_steps`` prompt steps on average, in events of ``per_event`` steps) of the
    share of a life's steps that carry a prompt: the smallest y with
    mean_j P(per_event Poisson(mean_j / per_event) <= y L_j) >= quantile."""
    events = [q.poisson_points(m / per_event) for m in mean_steps]
    shares = np.unique(np.concatenate([per_event * v / L for (v, _), L in zip(events, steps)]))
    cdf = np.zeros(len(shares))
    for (values, probs), life in zip(events, steps):
        cum = np.cumsum(probs)
        # P(events <= y L / per_event) at every candidate share y
        idx = np.searchsorted(values, np.floor(shares * life / per_event + 1e-9), side="right") - 1
        cdf += np.where(idx >= 0, cum[np.clip(idx, 0, None)], 0.0)
    cdf /= len(steps)
    return float(shares[min(len(shares) - 1, int(np.searchsorted(cdf, quantile - 1e-12)))])


def one_queue_tpot_quantile_s(lives: np.ndarray, tpot_s: float, rate: float, running: float,
                              prompt_step_s: float, per_decode_s: float, steps: np.ndarray,
                              mean_steps: np.ndarray, quantile: float, early: float = 0.0) -> float:
    """TPOT (s) of the request at ``quantile`` on one queue (k = 1), as shot noise on the
    decode time of a life of L steps (equally likely ``lives``, mean L tpot_s):
    - every prompt in the life (Poisson, mean_steps / E[K] of them; K its prompt steps, the
      ``steps`` equally likely: whole steps for prompts longer than the room, its share of
      a shared step for shorter ones) adds c = Delta K + b min(L (1 - v), L'): its K steps,
      each ``prompt_step_s`` (Delta) longer than a decode step, and its decode from the
      share v of the life on (v uniform) for its own life L' (one of ``lives``), adding
      ``per_decode_s`` (b) to every step;
    - each of the n decodes already running at the start adds d = b L min(1, R / L) (R
      uniform over the mean life: the rest of its life), their count over-dispersed, variance
      V n (``running_count_dispersion``; a gamma-mixed Poisson count, so kappa_2 gains
      (V - 1) n E[d]^2 and kappa_3 (V - 1) n ((2 V + 1) E[d]^3 + 3 E[d] Var d) over the
      Poisson count's), and each of the Poisson(``early``) that start with it (they arrived
      during its own prompt's steps) b L;
    the cumulants of a compound Poisson sum are kappa_r = mean E[mark^r] (closed forms: with
    w = 1 - v uniform, c = A + T w / w' up to w' = min(1, L' / L) and A + T past it,
    T = b min(L, L'): E[c^2] = w' (A^2 + A T + T^2 / 3) + (1 - w') (A + T)^2, E[c^3] =
    w' (A^3 + 3 A^2 T / 2 + A T^2 + T^3 / 4) + (1 - w') (A + T)^3). The life's own length
    feeds back: time dT more lets lambda dT more prompts in, each adding Delta K +
    E[b min(L w, L')] on average (b L / 2 for equal lives: half the life left), so a
    first-order deviation is amplified by 1 / (1 - u), u = lambda (Delta K +
    E[b min(L w, L')]) (linear response; u capped at 0.9). The
    quantile of each life is the normal one with the Cornish-Fisher skew term
    z + (z^2 - 1) gamma / 6, gamma = kappa_3 / kappa_2^1.5; over the lives, the mixture's."""
    lives = np.asarray(lives, dtype=float)
    dispersion = running_count_dispersion(lives, rate, prompt_step_s, per_decode_s, steps)
    k2, k3, u = shot_noise_cumulants(lives, rate, running, prompt_step_s, per_decode_s, steps, mean_steps, early,
                                     dispersion)
    sd = np.sqrt(k2) / (1.0 - u)
    scale = np.sqrt(np.maximum(k2, 0.0)) ** 3
    gamma = np.divide(k3, scale, out=np.zeros_like(k2), where=scale > 0.0)
    center = lives * tpot_s
    z = NormalDist().inv_cdf(quantile)
    if len(lives) == 1:
        return float((center + sd * (z + (z * z - 1.0) * gamma / 6.0))[0] / lives[0])

    c = np.maximum(gamma, 1e-9) / 6.0

    def below(y: float) -> float:  # P(TPOT <= y) over the lives: x = z + c (z^2 - 1) solved for z
        x = (y * lives - center) / np.maximum(sd, 1e-300)
        root = 1.0 + 4.0 * c * (x + c)
        zs = np.where(root > 0.0, (np.sqrt(np.maximum(root, 0.0)) - 1.0) / (2.0 * c), -np.inf)
        return float(np.mean([0.5 * math.erfc(-v / math.sqrt(2.0)) if v > -40 else 0.0 for v in zs]))
    each = (center + sd * (z + (z * z - 1.0) * gamma / 6.0)) / lives
    low, high = float(each.min()), float(each.max())
    while high - low > 1e-6 * high:
        mid = (low + high) / 2.0
        low, high = (mid, high) if below(mid) < quantile else (low, mid)
    return high


def running_count_dispersion(lives: np.ndarray, rate: float, prompt_step_s: float, per_decode_s: float,
                             steps: np.ndarray) -> float:
    """V - 1: how far the variance of the decodes running on one queue exceeds their mean n
    (0 for Poisson, the M/G/inf count at a fixed pace). The pace is not fixed: each decode
    lengthens every step of its life by b (``per_decode_s``) and each prompt brings K
    (``steps``) prompt steps Delta (``prompt_step_s``) longer, so one request more adds
    Delta E[K] + b E[L] of step time (L over ``lives``) to the lives under way, during which
    G = lambda (Delta E[K] + b E[L]) more requests arrive and stay (the loop gain): a
    deviation of the count feeds back on itself. In the linear-noise approximation of that birth-death loop (a count of Poisson
    arrivals over a window of L steps whose length grows with the count) the stationary
    variance is n / (1 - G), so V - 1 = G / (1 - G) (G capped at 0.9, as u). Checked on the
    loop alone (arrivals Poisson(lambda t) per step, t = t0 + b (N - n), lives of 20-300
    steps): var / mean 1.21-1.23 at G = 0.2, 1.94-2.04 at 0.5, 3.3-3.7 at 0.7 against 1.25,
    2.0 and 3.33. On the simulator, the count at a life's first step (one seed, 4,500
    requests; measured var / mean - 1 against G / (1 - G)): ``random_0_12`` at 81 % 1.28
    against 1.59, ``_24`` at 79 % 1.82 / 1.33, ``_05`` at 81 % 2.06 / 1.32, ``_28`` at 20 %
    1.19 / 1.28, ``_16`` at 21 % 0.88 / 1.08, ``_13`` at 87 % 0.67 / 1.16, ``_03`` at 85 %
    0.54 / 0.95, ``_08`` at 45 % 0.79 / 1.58, and ``_23`` at 61 % 8.4 / 2.2 (its prompt steps
    come in heavy-tailed runs, docs/serving-model.md, "Known weaknesses")."""
    gain = min(0.9, rate * (prompt_step_s * float(np.mean(steps)) + per_decode_s * float(np.mean(lives))))
    return gain / (1.0 - gain)


def shot_noise_cumulants(lives: np.ndarray, rate: float, running: float, prompt_step_s: float,
                         per_decode_s: float, steps: np.ndarray, mean_steps: np.ndarray,
                         early: float = 0.0, dispersion: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kappa_2, kappa_3, u) per life of ``lives`` (s^2, s^3, 1): the cumulants of the
    primary deviation of a life's decode time and its feedback
    (``one_queue_tpot_quantile_s``); the running decodes' count has variance (1 +
    ``dispersion``) times its mean ``running`` (gamma-mixed Poisson; 0: Poisson)."""
    lives = np.asarray(lives, dtype=float)
    mean_life = float(lives.mean())
    ks = np.asarray(steps, dtype=float)
    k_mean = float(ks.mean())
    events = np.asarray(mean_steps, dtype=float) / k_mean
    # (K, L, L'): a prompt of K steps in a life of L, its decode living L' steps (equally
    # likely, the other lives): c = a + b min(L w, L'), w = 1 - v uniform on (0, 1), a ramp
    # up to w' = min(1, L' / L), then flat at a + t, t = b min(L, L')
    a = prompt_step_s * ks[:, None, None]
    ramp = np.minimum(1.0, lives[None, :] / lives[:, None])[None]  # w'
    top = per_decode_s * np.minimum(lives[:, None], lives[None, :])[None]  # t
    flat = 1.0 - ramp
    k2 = events * (ramp * (a * a + a * top + top**2 / 3.0) + flat * (a + top) ** 2).mean(axis=(0, 2))
    k3 = events * (ramp * (a**3 + 1.5 * a * a * top + a * top**2 + top**3 / 4.0)
                   + flat * (a + top) ** 3).mean(axis=(0, 2))
    grow = (ramp * top / 2.0 + flat * top).mean(axis=(0, 2))  # E[b min(L w, L')]
    # the running decodes: d = b R (uniform on (0, b min(L, L_mean))), or b L once R > L
    top = per_decode_s * np.minimum(lives, mean_life)
    ramp, flat, whole = np.minimum(1.0, lives / mean_life), np.maximum(0.0, 1.0 - lives / mean_life), per_decode_s * lives
    m1 = ramp * top / 2.0 + flat * whole  # E[d], E[d^2], E[d^3] of a running decode's mark
    m2 = ramp * top**2 / 3.0 + flat * whole**2
    m3 = ramp * top**3 / 4.0 + flat * whole**3
    # a count of mean n and variance V n, V = 1 + dispersion (gamma-mixed Poisson: its third
    # cumulant n V (2 V - 1)): the random sum's kappa_2 = n E[d^2] + (V - 1) n E[d]^2, kappa_3 =
    # n E[d^3] + (V - 1) n ((2 V + 1) E[d]^3 + 3 E[d] Var d)
    v = 1.0 + dispersion
    k2 = k2 + running * (m2 + dispersion * m1**2)
    k3 = k3 + running * (m3 + dispersion * ((2.0 * v + 1.0) * m1**3 + 3.0 * m1 * (m2 - m1**2)))
    k2 = k2 + early * (per_decode_s * lives) ** 2
    k3 = k3 + early * (per_decode_s * lives) ** 3
    u = np.minimum(0.9, rate * (prompt_step_s * k_mean + grow))
    return k2, k3, u
