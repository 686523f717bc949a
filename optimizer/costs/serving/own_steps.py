"""A prompt's own steps: the time (s) from the start of its first chunk's step to the end
of its last, beside the decodes its replica holds (plain Python and numpy;
docs/serving-model.md, "TTFT: the wait behind other prompts, plus the prompt's own steps").

The other prompts of its steps (x' - s tokens) are half ahead of it and half behind (FCFS);
the prompt tokens earlier steps left waiting (``left_over``, ``prefill_backlog``) are ahead of
it too; the tokens ahead and its own fill floor(. / (C - n_a)) full steps, and its last step
holds the rest and those behind, costed linear between multiples of C / ``STEP_GRID`` tokens
(in a pipeline a step's time is its first micro-batch's, so left-over tokens cost whole steps
there). A step's first chunk is the prompt's own (``Replica.lead_step_ns``: its attention at
its own length; in a pipeline the first micro-batch, the largest, sets the step).
``lead_law``: a pipelined prompt step's law over its first chunk's prompt (the step under way
when a prompt arrives).
"""
from __future__ import annotations

import math

import numpy as np

from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.service_types import Replica, ServiceLoad
from optimizer.costs.serving.steady_state import Steady, prompt_step_tokens, step_at

STEP_GRID = 8  # a prompt's last step is costed linear between multiples of C / 8 tokens


class OwnSteps:
    """``own(joined, prompts, step_tokens)`` -> the own steps (s) of each prompt of
    ``prompts`` tokens at ``joined`` decodes (module doc). ``rest_share`` is the probability
    that a step is under way when the prompt is admitted whose rest it waits here (0 when
    the wait model holds it)."""

    def __init__(self, rep: Replica, knobs: ServingKnobs, load: ServiceLoad, st: Steady,
                 per_queue_rps: float, rest_share: float):
        self.rep, self.knobs, self.load = rep, knobs, load
        self.per_queue_rps, self.rest_share = per_queue_rps, rest_share
        self.budget, self.ctx = knobs.prefill_chunk_tokens, load.decode_context_tokens
        # without micro-batches the own chunk adds its attention at its own length, which
        # hardly depends on the decodes beside it: costed at the mean joined count rounded to
        # a power of two (few distinct steps are costed); in a pipeline the dealing of the
        # step's items over the micro-batches depends on the decodes: costed at the decodes
        # of the step
        self.pipelined = rep.lead_step_ns is not None and \
            max(knobs.prefill_micro_batches, knobs.decode_micro_batches) > 1
        self.lead_ref = 0 if st.joined < 0.5 else min(1 << max(0, round(math.log2(st.joined))), self.budget - 1)
        self._extras: dict[tuple[int, int], int] = {}
        self._steps: dict[tuple[float, int], float] = {}
        self._leads: dict[tuple[float, int, int], float] = {}
        self._extra_rows: dict[tuple[tuple[int, ...], int], tuple[np.ndarray, np.ndarray]] = {}

    def idle_ns(self, decodes: int) -> int:
        """A step of ``decodes`` decode tokens and no prompt chunk (ns)."""
        return self.rep.step_ns(self.knobs, 0, decodes, self.ctx)

    def __call__(self, joined: float, prompts: tuple[int, ...], step_tokens: int | None = None,
                 left_over: np.ndarray | None = None) -> np.ndarray:
        """The own steps (s) of each prompt of ``prompts``: the others of its step are
        ``step_tokens`` - s tokens if given, else ``prompt_step_tokens``' (none when prompts
        fill the room). ``left_over``: prompt tokens earlier steps left waiting, ahead of it
        (token FCFS; ``prefill_backlog``): one row per prompt, one column per amount."""
        budget = self.budget
        joined = min(joined, budget - 1.0)
        tokens = prompt_step_tokens(self.rep, self.knobs, self.load, self.per_queue_rps, joined) \
            if step_tokens is None else step_tokens
        rest = self.rest_share * step_at(self.idle_ns, max(1.0, joined)) / 2.0 if self.rest_share else 0.0
        others = 0.0 if tokens >= budget else (tokens - self.load.prompt_tokens) / 2.0  # ahead, and behind
        room = budget - joined
        cell = budget / STEP_GRID
        extra = np.zeros(1) if left_over is None else np.asarray(left_over, dtype=float)
        lengths = np.asarray(prompts, dtype=float)
        ahead = extra[None, :] + others + lengths[:, None]  # what must be done before its first token
        whole = np.where(ahead > room, np.floor(ahead / room), 0.0)
        last = np.where(ahead > whole * room, np.ceil(ahead - whole * room + others), 0.0)  # its last step's tokens
        low = np.floor(last / cell)
        frac = last / cell - low
        cells = low.astype(int)
        between = frac > 1e-12
        costed, full_ns = self._costed(joined, prompts, int(cells.max()) + 2, last > 0, cells, between, whole)
        rows = np.arange(len(prompts))[:, None]
        base = costed[rows, cells]
        last_ns = np.where(last > 0, base + np.where(between, frac * (costed[rows, cells + 1] - base), 0.0), 0.0)
        out = (whole * full_ns + last_ns + rest) * 1e-9
        return out[:, 0] if left_over is None else out

    def _costed(self, joined: float, prompts: tuple[int, ...], cells: int, used: np.ndarray, low: np.ndarray,
                between: np.ndarray, whole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(step (ns) of each prompt at each multiple g < ``cells`` of C / ``STEP_GRID`` tokens,
        its full step (ns), one row per prompt). Without a pipeline the step of g cells plus
        the prompt's ``_lead_extra`` (memoised apart: the extra does not depend on the
        decodes); in a pipeline only the cells ``used`` (at ``low`` and, ``between`` two, the
        next one) and the full steps of prompts with a ``whole`` one."""
        cell = self.budget / STEP_GRID
        if not self.pipelined:
            base = np.array([self._base_ns(joined, round(g * cell)) for g in range(cells)])
            key = (prompts, cells)
            if key not in self._extra_rows:
                self._extra_rows[key] = (
                    np.array([[self._lead_extra(p, round(g * cell)) for g in range(cells)] for p in prompts], dtype=float),
                    np.array([[self._lead_extra(p, self.budget)] for p in prompts], dtype=float))
            extra, full_extra = self._extra_rows[key]
            return base[None, :] + extra, self._base_ns(joined, self.budget) + full_extra
        costed = np.zeros((len(prompts), cells))
        full_ns = np.zeros((len(prompts), 1))
        for i, prompt in enumerate(prompts):
            for g in set(low[i, used[i]].tolist()) | set((low[i, used[i] & between[i]] + 1).tolist()):
                costed[i, g] = self._lead_ns(joined, round(g * cell), prompt)
            if whole[i].any():
                full_ns[i] = self._lead_ns(joined, self.budget, prompt)
        return costed, full_ns

    def _lead_ns(self, joined: float, tokens: int, prompt: int) -> float:
        """``_step_ns`` memoised (a pipeline)."""
        key = (joined, tokens, prompt)
        if key not in self._leads:
            self._leads[key] = self._step_ns(joined, tokens, prompt)
        return self._leads[key]

    def _base_ns(self, joined: float, tokens: int) -> float:
        """A step of ``tokens`` prompt tokens (at most the room) beside ``joined`` decodes,
        the mean prompt's chunk first (ns), memoised."""
        key = (joined, tokens)
        if key not in self._steps:
            budget = self.budget
            self._steps[key] = step_at(
                lambda k: self.rep.step_ns(self.knobs, max(0, min(tokens, math.floor(budget - k))), k, self.ctx), joined)
        return self._steps[key]

    def lead_law(self, joined: float, prompts: tuple[int, ...], mean_tokens: float,
                 room: float) -> tuple[np.ndarray, np.ndarray]:
        """(s, probabilities): a pipelined prompt step's law over its first chunk's prompt,
        each of the equally likely ``prompts`` (its micro-batch sets the step), beside
        ``mean_tokens`` prompt tokens (at least its own, at most ``room``)."""
        steps = np.array([self._step_ns(joined, math.floor(min(room, max(lead, mean_tokens))), lead) * 1e-9
                          for lead in prompts])
        return steps, np.full(len(prompts), 1.0 / len(prompts))

    def _step_ns(self, joined: float, tokens: int, prompt: int) -> float:
        """A step of ``tokens`` prompt tokens (at most the room) beside ``joined`` decodes,
        the prompt's chunk first (ns)."""
        rep, knobs, budget, ctx = self.rep, self.knobs, self.budget, self.ctx

        def at(k):
            chunk = max(0, min(tokens, math.floor(budget - k)))
            if self.pipelined:
                return rep.lead_step_ns(knobs, prompt, chunk, k, ctx)
            return rep.step_ns(knobs, chunk, k, ctx)
        return step_at(at, joined) + (0 if self.pipelined else self._lead_extra(prompt, tokens))

    def _lead_extra(self, prompt: int, tokens: int) -> int:
        """What a step of ``tokens`` (no pipeline) takes more when its first chunk is the
        prompt's own (``Replica.lead_step_ns``: its attention at its own length) than the
        mean prompt's, at ``lead_ref`` decodes (ns)."""
        rep = self.rep
        if rep.lead_step_ns is None:
            return 0
        chunk = max(0, min(tokens, self.budget - self.lead_ref))
        key = (prompt, chunk)
        if key not in self._extras:
            self._extras[key] = (rep.lead_step_ns(self.knobs, prompt, chunk, self.lead_ref, self.ctx)
                                 - rep.step_ns(self.knobs, chunk, self.lead_ref, self.ctx))
        return self._extras[key]
