"""The prompt steps in one decoding request's life (plain Python and numpy;
docs/serving-model.md, "TPOT"): a request's TPOT is its decode time over its L = D' - 1
decode steps, so it is set by how many of those steps carry a prompt chunk, and short
outputs (small L) spread it most.

Excess after the own prompt (prompts shorter than the step's room; the one-queue chain
below, with k > 1 queues ``routing.routed_excess`` gives a and b of ``chain_excess``): the engine admits
at each step the prompts that arrived at its queue during the step before, so whether a
step carries prompts is a two-state chain. After a step of length d without prompts a
prompt step follows with probability a = 1 - e^{-lambda d}, after a prompt step of length
p with b = 1 - e^{-lambda p} (lambda: the queue's arrival rate). Its stationary share is
pi = a / (a + 1 - b); a decode's life starts right after its own prompt's step, so step i
of it carries a prompt with probability pi + (b - pi) r^(i-1), r = b - a: over L steps,
e(L) = (b - pi) (1 - r^L) / (1 - r) prompt steps more than the stationary count.

The count over a life of L steps: prompt-step events Poisson with mean (f L + e(L)) / K'
(f the stationary share, K' = max(1, K) steps per prompt: a prompt longer than the room
takes K consecutive steps, shorter ones share a step), each event K' steps. Over the
requests, L follows the output lengths (equal-probability points); the share's quantile
is read off the mixture.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from optimizer.costs.serving import queueing as q


def excess_prompt_steps(rate: float, prompt_step_s: float, decode_step_s: float, steps: np.ndarray) -> np.ndarray:
    """e(L) for each L in ``steps`` (module doc); 0 for a rate of 0."""
    if rate <= 0.0:
        return np.zeros(len(steps))
    return chain_excess(-math.expm1(-rate * decode_step_s), -math.expm1(-rate * prompt_step_s), steps)


def chain_excess(a: float, b: float, steps: np.ndarray) -> np.ndarray:
    """e(L) = (b - pi) (1 - r^L) / (1 - r), pi = a / (a + 1 - b), r = b - a, for each L in
    ``steps``: the prompt steps of a life of L steps started right after a prompt step, over
    the stationary count, for the two-state chain (module doc); 0 when b <= pi."""
    pi = a / (a + 1.0 - b)
    r = b - a
    if b <= pi or r >= 1.0:
        return np.zeros(len(steps))
    return (b - pi) * (1.0 - r ** np.asarray(steps, dtype=float)) / (1.0 - r)


def prompts_per_prompt_step(rate: float, decode_step_s: float, busy: float,
                            prompt_step_s: Callable[[float], float]) -> float:
    """m: the mean prompts of a prompt step over the steps (the decodes' view; a prompt's own
    step is length-biased and holds more, ``metrics._prompt_step_tokens``), prompts shorter
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
