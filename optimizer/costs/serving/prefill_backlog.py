"""Prompt tokens a step leaves over for the next (gated admission, per replica queue).

A step takes the waiting prompt tokens up to its room R = C - n_a, oldest first; the prompts
that arrive during a step are admitted at its end, together. With A_n the prompt tokens that
arrive during step n, the tokens still waiting after step n are
    L_{n+1} = max(L_n + A_n - R, 0)                    (Lindley's recursion)
so L is the waiting time of a G/G/1 queue whose "service times" are A_n and whose
"interarrival times" are the constant R. A_n is compound: the prompts of the workload's
lengths that reach the replica during step n, T the step while a backlog lasts (a full step).
In rooms (y = L / R, a = s / R):
- tail (Cramer-Lundberg): P(L / R > y) ~ c exp(-theta y), theta > 0 the root of
  E[exp(theta (A / R - 1))] = 1 (on one queue lambda T (E[exp(theta a)] - 1) = theta: the
  random walk's adjustment coefficient, the exact decay rate of the stationary waiting time);
- c = P(L > 0) from one step of the recursion with L of that law (atom 1 - c at 0):
  c = P(A > R) (1 - c) + c E[min(1, exp(-theta (1 - A / R)))], so
  c = P(A > R) / (1 - E[min(1, exp(-theta (1 - A / R)))] + P(A > R)), with A's law on a
  grid of R / ``GRID`` tokens (by FFT).
Against the recursion iterated to convergence on that grid (exponential, lognormal and
uniform lengths at 20-93 % of the room; docs/serving-model.md) c is within 0.03 and the mean
0.70-1.0 of the recursion's (the exponential tail from 0 misses the overshoot: low).
A new prompt has these L tokens ahead of it beyond the step under way (``OwnSteps``).

The count of prompts in A (``queues``): on one queue Poisson(lambda T). On k > 1 queues the
least-loaded router spreads the deployment's arrivals over the replicas: a replica takes about
every k-th of them, so its count is that of a round robin with a random phase,
floor((J + U) / k) with J ~ Poisson(k lambda T) and U uniform on 0 .. k - 1 (mean lambda T,
far less spread than Poisson's: measured on the stored plans, P(L > 0) 0.19 / 0.21 against
0.19 / 0.25 simulated on random_0_00 at 79 % and random_0_20 at 59 %, where Poisson counts give
0.39 / 0.23).

Entry (``entry_arrivals``): a backlog starts from a step without one, a prompt step of the
step law (T_j with probabilities p_j), not a full step: P(A > R) is the mix over those
steps' arrivals, and the one-step fixed point above gives the per-step share c; an arriving
prompt sees the time share, c T_full / (c T_full + (1 - c) E[T]) (backlog steps are full).
With every step full (the default) both are the plain recursion's c.
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
    return np.clip(np.fft.irfft(np.exp(arrivals * (_transform(cells, size) - 1.0)), size), 0.0, None)


def _transform(cells: np.ndarray, size: int) -> np.ndarray:
    """rfft of the law of one item of the equally likely sizes ``cells`` (grid cells)."""
    return np.fft.rfft(np.bincount(np.minimum(cells, size - 1), minlength=size).astype(float) / len(cells))


def round_robin_counts(arrivals: float, queues: int) -> np.ndarray:
    """P(n), n = 0, 1, ...: the prompts a replica takes when it takes every ``queues``-th of
    the deployment's Poisson(``queues`` ``arrivals``) prompts with a random phase:
    n = floor((j + u) / k), u uniform on 0 .. k - 1 (k = 1: Poisson)."""
    total = queues * arrivals
    top = int(total + 10.0 * math.sqrt(total) + 10.0)
    j = np.arange(top + 1)
    poisson = np.exp(j * math.log(total) - total - np.array([math.lgamma(x + 1.0) for x in j])) if total > 0.0 \
        else (j == 0).astype(float)
    counts = np.zeros(top // queues + 2)
    np.add.at(counts, j // queues, poisson * (queues - j % queues) / queues)
    np.add.at(counts, j // queues + 1, poisson * (j % queues) / queues)
    return counts


def _arrivals_law(phi: np.ndarray, arrivals: float, size: int, queues: int) -> np.ndarray:
    """Law of A / R on the grid of 1 / GRID rooms, renormalised: the prompts (one item's
    transform ``phi``) that reach a replica of ``queues`` during a step of ``arrivals`` mean
    prompts (module doc): Poisson on one queue, else the round robin's count."""
    if queues == 1:
        transform = np.exp(arrivals * (phi - 1.0))
    else:
        transform, power = np.zeros_like(phi), np.ones_like(phi)
        for p in round_robin_counts(arrivals, queues):
            transform += p * power
            power = power * phi
    pmf = np.clip(np.fft.irfft(transform, size), 0.0, None)
    return pmf / pmf.sum()


def _decay_rate(pmf: np.ndarray, x: np.ndarray) -> float:
    """theta > 0 with sum pmf exp(theta (x - 1)) = 1 over the grid law ``pmf`` of A / R at
    ``x`` (Newton from above: the sum is convex in theta; the walk's drift is negative)."""
    theta = 1.0
    while float(pmf @ np.exp(theta * (x - 1.0))) <= 1.0:
        theta *= 2.0
    for _ in range(100):
        e = pmf * np.exp(theta * (x - 1.0))
        step = (float(e.sum()) - 1.0) / float(e @ (x - 1.0))
        theta -= step
        if abs(step) <= 1e-10 * theta:
            break
    return theta


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
                   entry_arrivals: tuple[np.ndarray, np.ndarray] | None = None,
                   queues: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(steps, probabilities): the law of L / R, prompt tokens left waiting beyond the step
    under way, in full steps (an atom at 0 and ``POINTS`` equally likely points of the
    exponential tail); ``arrivals`` = lambda T prompts per full step at the replica, ``room``
    = R tokens, ``entry_arrivals`` = (lambda T_j, p_j) of the steps a backlog starts from
    (None: full steps), ``queues`` = k (module doc). (inf, 1) when the arrivals pass the room
    on average."""
    rooms = np.asarray(prompt_points, dtype=float) / room
    if arrivals * rooms.mean() >= 1.0:
        return np.array([math.inf]), np.array([1.0])
    most = arrivals if entry_arrivals is None else max(arrivals, float(np.max(entry_arrivals[0])))
    spread = most * rooms.mean() + 10.0 * math.sqrt(most * float((rooms * rooms).mean())) + 2.0
    size = 1 << math.ceil(math.log2(GRID * max(spread, rooms.max() + 2.0)))
    phi = _transform(np.rint(rooms * GRID).astype(int), size)
    a = _arrivals_law(phi, arrivals, size, queues)
    x = np.arange(size) / GRID
    over = float(a[GRID + 1:].sum())  # A > R
    if entry_arrivals is not None:  # from a step of the step law
        over = sum(p * float(_arrivals_law(phi, n, size, queues)[GRID + 1:].sum()) for n, p in zip(*entry_arrivals))
    if over <= 1e-9:
        return np.zeros(1), np.ones(1)
    theta = adjustment_coefficient(rooms, arrivals) if queues == 1 else _decay_rate(a, x)
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
