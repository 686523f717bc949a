"""Time of one engine step of one attention-DP replica under continuous batching, integer ns.

A step (one forward pass, as vLLM and SGLang run it with chunked prefill) carries every
running decode request (one token each, attending to its cached context) and prompt chunks
(``tokens`` consecutive prompt positions from ``start``, attending causally to the cached
prefix and to each other). The model is the static-batch one of ``tables`` with the step's
token counts in place of the batch's; nothing is copied:

- per layer, ``tables.dense_layer_ns`` with FLOPs = T * linear_flops_per_token_layer +
  core(prefill attended keys) + core(decode contexts) (``formulas``), and KV bytes = the
  chunks' new tokens written + the cached prefix they read + every decode context read
  (sliding layers capped at the window); T = prefill + decode tokens;
- per MoE layer, ``PhaseCosts.moe_ns`` of the layer's hot load over ``tables.moe_terms``
  for T tokens reading only the experts they are expected to reach (1 - (1-k/E)^T of the
  rank's experts; equals all of them to float precision once T >> E/k);
- embedding, LM head over the sequences sampled this step (decode requests and chunks that
  end a prompt), pipeline sends (``tables.edge_costs``);
- the stages' times combine as the static batch's do: a step with decode requests takes
  ``timing.decode_step_ns`` (the periodic step, max(m, p) * max stage), a prefill-only step
  ``timing.makespan_ns`` (its last chunk's first token leaves after the pipeline makespan),
  where m is the number of micro-batches the step is cut into and the ``StepBatch`` is the
  largest one of them.

So a prefill-only step of whole prompts equals the static prefill makespan and a
decode-only step at the mean context equals the static decode step (see the tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from optimizer.costs import formulas as cm
from optimizer.costs.layout import Degrees
from optimizer.costs.tables import LinkFacts, PhaseCosts, dense_layer_ns, edge_costs, moe_terms
from optimizer.costs.timing import decode_step_ns, makespan_ns
from optimizer.inputs.schema import Instance


@dataclass(frozen=True)
class StepBatch:
    """What one micro-batch of a step computes, as the sums the costs need.

    Per attention window (None = full attention; the model's sliding window), the
    prompt keys the chunks' tokens attend to in all, the cached prefix tokens the chunks
    read, and the sum over decode requests of the (window-capped) context each reads."""

    prefill_tokens: int
    decode_requests: int
    logits: int
    attended_keys: dict[int | None, float]
    prefix_kv_tokens: dict[int | None, int]
    decode_kv_tokens: dict[int | None, int]

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_requests


def windows(inst: Instance) -> tuple[int | None, ...]:
    """The attention windows the model's layers use (None = full)."""
    m = inst.model
    return tuple(sorted({m.sliding_window if m.is_sliding(l) else None for l in range(m.num_layers)},
                        key=lambda w: -1 if w is None else w))


def step_batch(inst: Instance, chunks: Iterable[tuple[int, int, bool]],
               decode_contexts: Sequence[int] | np.ndarray,
               model_windows: tuple[int | None, ...] | None = None) -> StepBatch:
    """A ``StepBatch`` from prompt chunks (start, tokens, ends_prompt) and the context
    (cached tokens including the one being fed) of each decode request."""
    chunks = list(chunks)
    contexts = np.asarray(decode_contexts, dtype=np.int64)
    attended, prefix, decode = {}, {}, {}
    for w in model_windows or windows(inst):
        attended[w] = sum(cm.attended_keys(start, n, w) for start, n, _ in chunks)
        prefix[w] = sum(start if w is None else min(start, w) for start, _, _ in chunks)
        decode[w] = int(contexts.sum() if w is None else np.minimum(contexts, w).sum())
    return StepBatch(sum(n for _, n, _ in chunks), len(contexts),
                     len(contexts) + sum(1 for _, _, ends in chunks if ends),
                     attended, prefix, decode)


class StepTimer:
    """Step times of one replica of one configuration: ``stages`` the layers of each
    pipeline stage, ``hot`` the hot-rank load (parts of LOAD_SCALE) of each MoE layer.
    Layers of one kind (MoE or dense, attention window) share their dense cost, so it is
    computed once per kind and step; the MoE layers of a stage are summed vectorised
    (``PhaseCosts.moe_total_ns``, the same integers as ``PhaseCosts.stage_ns``)."""

    def __init__(self, inst: Instance, deg: Degrees, facts: LinkFacts,
                 stages: Sequence[Sequence[int]], hot: dict[int, int]):
        m = inst.model
        self.inst, self.deg, self.facts = inst, deg, facts
        self.windows = windows(inst)
        kinds: dict[tuple[bool, int | None], int] = {}
        for layer in range(m.num_layers):
            kinds.setdefault(self._kind(layer), layer)
        self.kinds = list(kinds.items())
        self.linear = [cm.linear_flops_per_token_layer(m, layer) for _, layer in self.kinds]
        self.stage_counts = [[sum(1 for l in layers if self._kind(l) == key) for key, _ in self.kinds]
                             for layers in stages]
        self.stage_loads = [np.array([hot[l] for l in layers if l in hot], dtype=np.int64)
                            for layers in stages]
        self.kv_per_token = cm.kv_bytes_per_token_layer(m, deg.tp)
        self.core_per_key = cm.attention_core_flops_per_key(m)
        self._moe_memo: dict[int, list[int]] = {}
        self._edge_memo: dict[tuple[int, int], tuple[int, int, int]] = {}

    def _kind(self, layer: int) -> tuple[bool, int | None]:
        m = self.inst.model
        return cm.is_moe_layer(m, layer), (m.sliding_window if m.is_sliding(layer) else None)

    def _moe(self, tokens: int) -> list[int]:
        """Per stage, the MoE time of its layers for ``tokens`` tokens (memoised: it depends
        on the token count alone)."""
        if tokens not in self._moe_memo:
            phase = PhaseCosts((), (), *moe_terms(self.inst, self.deg, tokens, True, self.facts),
                               0, 0, 0, self.deg.ep)
            self._moe_memo[tokens] = [phase.moe_total_ns(loads) for loads in self.stage_loads]
        return self._moe_memo[tokens]

    def _edges(self, tokens: int, logits: int) -> tuple[int, int, int]:
        key = (tokens, logits)
        if key not in self._edge_memo:
            self._edge_memo[key] = edge_costs(self.inst, self.deg, self.facts, tokens, logits)
        return self._edge_memo[key]

    def batch(self, chunks: Iterable[tuple[int, int, bool]],
              decode_contexts: Sequence[int] | np.ndarray) -> StepBatch:
        return step_batch(self.inst, chunks, decode_contexts, self.windows)

    def ns(self, batch: StepBatch, micro_batches: int = 1) -> int:
        """Time of the step whose largest micro-batch is ``batch``, ns."""
        if batch.tokens == 0:
            return 0
        inst, deg, facts, m = self.inst, self.deg, self.facts, self.inst.model
        dense = []
        for ((_, w), layer), linear in zip(self.kinds, self.linear):
            flops = (batch.tokens * linear + self.core_per_key * batch.attended_keys[w]
                     + cm.decode_attention_flops_per_token(m, batch.decode_kv_tokens[w]))
            kv_bytes = ((batch.prefill_tokens + batch.prefix_kv_tokens[w]) * self.kv_per_token
                        + batch.decode_kv_tokens[w] * self.kv_per_token)
            dense.append(dense_layer_ns(inst, deg, layer, batch.tokens, flops, kv_bytes, facts,
                                        batch.decode_requests)[0])
        embed_ns, head_ns, p2p_ns = self._edges(batch.tokens, batch.logits)
        moe_ns = self._moe(batch.tokens)
        p = len(self.stage_counts)
        per_stage = [sum(c * d for c, d in zip(counts, dense)) + moe_ns[j]
                     + (embed_ns if j == 0 else 0) + (head_ns if j == p - 1 else 0)
                     for j, counts in enumerate(self.stage_counts)]
        if batch.decode_requests:
            return decode_step_ns(per_stage, micro_batches, p2p_ns)
        return makespan_ns(per_stage, micro_batches, p2p_ns)


def step_ns(inst: Instance, deg: Degrees, facts: LinkFacts, stages: Sequence[Sequence[int]],
            hot: dict[int, int], batch: StepBatch, micro_batches: int = 1) -> int:
    """Time of one engine step of one replica, ns: ``batch`` is the largest of the step's
    ``micro_batches`` micro-batches (see ``StepTimer``)."""
    return StepTimer(inst, deg, facts, stages, hot).ns(batch, micro_batches)
