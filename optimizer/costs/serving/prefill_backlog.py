"""Prompt tokens a step leaves over for the next (gated admission, per replica queue).

A step takes the waiting prompt tokens up to its room R = C - n_a, oldest first; the prompts
that arrive during a step are admitted at its end, together. With A_n the prompt tokens that
arrive during step n, the tokens still waiting after step n are
    L_{n+1} = max(L_n + A_n - R, 0)                    (Lindley's recursion)
so L is the waiting time of a G/G/1 queue whose "service times" are A_n and whose
"interarrival times" are the constant R. A_n is compound Poisson: Poisson(lambda T) prompts of
the workload's lengths, T the step while a backlog lasts (a full step). In rooms (y = L / R,
a = s / R):
- tail (Cramer-Lundberg): P(L / R > y) ~ c exp(-theta y), theta > 0 the root of
  E[exp(theta (A / R - 1))] = 1, i.e. lambda T (E[exp(theta a)] - 1) = theta (the random
  walk's adjustment coefficient; exact decay rate of the stationary waiting time);
- c = P(L > 0) from one step of the recursion with L of that law (atom 1 - c at 0):
  c = P(A > R) (1 - c) + c E[min(1, exp(-theta (1 - A / R)))], so
  c = P(A > R) / (1 - E[min(1, exp(-theta (1 - A / R)))] + P(A > R)), with A's law on a
  grid of R / ``GRID`` tokens (compound Poisson by FFT).
Against the recursion iterated to convergence on that grid (exponential, lognormal and
uniform lengths at 20-93 % of the room; docs/serving-model.md) c is within 0.03 and the mean
0.70-1.0 of the recursion's (the exponential tail from 0 misses the overshoot: low).
A new prompt has these L tokens ahead of it beyond the step under way: L / R full steps more.

Entry (``entry_arrivals``): a backlog starts from a step without one, a prompt step of the
step law (T_j with probabilities p_j), not a full step: P(A > R) is the Poisson mix over
those steps' arrivals, and the one-step fixed point above gives the per-step share c; an
arriving prompt sees the time share, c T_full / (c T_full + (1 - c) E[T]) (backlog steps are
full). With every step full (the default) both are the plain recursion's c.
"""

from __future__ import annotations

import math

import numpy as np

GRID = 32  # grid cells per room for A's law
POINTS = 16  # equally likely points the exponential tail is cut into


def _compound_poisson(cells: np.ndarray, arrivals: float, size: int) -> np.ndarray:
    """Law (on ``size`` grid cells, not renormalised) of the sum of Poisson(``arrivals``)
    items whose sizes are the equally likely ``cells``: exp(arrivals (phi - 1)) of their
    transform phi, by FFT (``size`` must hold the sum's bulk: the rest wraps around)."""
    one = np.bincount(np.minimum(cells, size - 1), minlength=size).astype(float) / len(cells)
    return np.clip(np.fft.irfft(np.exp(arrivals * (np.fft.rfft(one) - 1.0)), size), 0.0, None)


def _arrivals_pmf(rooms: np.ndarray, arrivals: float, size: int) -> np.ndarray:
    """Law of A / R on the grid of 1 / GRID rooms: Poisson(``arrivals``) prompts of the
    equally likely lengths ``rooms`` (in rooms, rounded to the nearest cell)."""
    pmf = _compound_poisson(np.rint(rooms * GRID).astype(int), arrivals, size)
    return pmf / pmf.sum()


def adjustment_coefficient(rooms: np.ndarray, arrivals: float) -> float:
    """theta > 0 with arrivals (mean(exp(theta a)) - 1) = theta (Newton from above: the
    left side is convex, so the iterates decrease to the root); inf when no prompt has
    a > 0; needs arrivals * mean(a) < 1."""
    if rooms.max() <= 0.0:
        return math.inf
    theta = 1.0
    while arrivals * (np.mean(np.exp(theta * rooms)) - 1.0) <= theta:  # a point above the root
        theta *= 2.0
    for _ in range(100):
        e = np.exp(theta * rooms)
        f = arrivals * (e.mean() - 1.0) - theta
        step = f / (arrivals * float((rooms * e).mean()) - 1.0)
        theta -= step
        if abs(step) <= 1e-10 * theta:
            break
    return theta


def leftover_steps(prompt_points: tuple[int, ...], arrivals: float, room: float,
                   entry_arrivals: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, probabilities): the law of L / R, prompt tokens left waiting beyond the step
    under way, in full steps (an atom at 0 and ``POINTS`` equally likely points of the
    exponential tail); ``arrivals`` = lambda T prompts per full step, ``room`` = R tokens,
    ``entry_arrivals`` = (lambda T_j, p_j) of the steps a backlog starts from (module doc;
    None: full steps). (inf, 1) when the arrivals pass the room on average."""
    rooms = np.asarray(prompt_points, dtype=float) / room
    if arrivals * rooms.mean() >= 1.0:
        return np.array([math.inf]), np.array([1.0])
    most = arrivals if entry_arrivals is None else max(arrivals, float(np.max(entry_arrivals[0])))
    spread = most * rooms.mean() + 10.0 * math.sqrt(most * float((rooms * rooms).mean())) + 2.0
    size = 1 << math.ceil(math.log2(GRID * max(spread, rooms.max() + 2.0)))
    a = _arrivals_pmf(rooms, arrivals, size)
    x = np.arange(size) / GRID
    over = float(a[GRID + 1:].sum())  # A > R
    if entry_arrivals is not None:  # from a step of the step law
        over = sum(p * float(_arrivals_pmf(rooms, n, size)[GRID + 1:].sum()) for n, p in zip(*entry_arrivals))
    if over <= 1e-9:
        return np.zeros(1), np.ones(1)
    theta = adjustment_coefficient(rooms, arrivals)
    below = float(a @ np.exp(-theta * np.clip(1.0 - x, 0.0, None)))
    c = min(1.0, over / (1.0 - below + over))
    if entry_arrivals is not None:  # the share of the time: a backlog's steps are full
        c = c * arrivals / (c * arrivals + (1.0 - c) * float(np.dot(*entry_arrivals)))
    levels = (np.arange(POINTS) + 0.5) / POINTS
    steps = np.concatenate(([0.0], -np.log1p(-levels) / theta))
    return steps, np.concatenate(([1.0 - c], np.full(POINTS, c / POINTS)))


def step_tokens_law(prompt_points: tuple[int, ...], arrivals: float, room: float) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, probabilities): the prompt tokens min(R, A) of a prompt step, A the tokens
    of Poisson(``arrivals``) prompts of the equally likely ``prompt_points`` given at least
    one (gated: a step takes the prompts that came during the one before it), on a grid of an
    eighth of the mean prompt (at most R / GRID) tokens."""
    lengths = np.asarray(prompt_points, dtype=float)
    cell = min(room / GRID, lengths.mean() / 8.0)
    cap = math.ceil(room / cell)
    spread = arrivals * lengths.mean() + 10.0 * math.sqrt(arrivals * float((lengths * lengths).mean()))
    size = 1 << math.ceil(math.log2(max(cap, (spread + lengths.max()) / cell) + 2))
    cells = np.rint(lengths / cell).astype(int)
    if arrivals <= 0.0:  # the limit of the count given at least one: one prompt
        pmf = np.bincount(np.minimum(cells, size - 1), minlength=size).astype(float)
    else:
        pmf = _compound_poisson(cells, arrivals, size)
    pmf[0] = 0.0  # at least one prompt (a prompt rounds to cell 0 only if it is tiny)
    law = np.zeros(cap + 1)
    law[:cap] = pmf[:cap]
    law[cap] = pmf[cap:].sum()
    keep = law > 1e-9 * law.sum()
    tokens = np.minimum(np.arange(cap + 1) * cell, room)[keep]
    return tokens, law[keep] / law[keep].sum()
