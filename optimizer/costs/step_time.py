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
  end a prompt), pipeline sends (``tables.assemble_phase``);
- the stages' times combine as the static batch's do: a step with decode requests takes
  ``timing.decode_step_ns`` (the periodic step, max(m, p) * max stage), a prefill-only step
  ``timing.makespan_ns`` (its last chunk's first token leaves after the pipeline makespan),
  where m is the number of micro-batches the step is cut into and the ``StepBatch`` is the
  largest one of them.

So a prefill-only step of whole prompts equals the static prefill makespan and a
decode-only step at the mean context equals the static decode step (see the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from optimizer.costs import formulas as cm
from optimizer.costs.layout import Degrees
from optimizer.costs.tables import (LinkFacts, PhaseCosts, assemble_phase, dense_layer_ns,
                                    moe_terms)
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
               decode_contexts: Sequence[int] | np.ndarray) -> StepBatch:
    """A ``StepBatch`` from prompt chunks (start, tokens, ends_prompt) and the context
    (cached tokens including the one being fed) of each decode request."""
    chunks = list(chunks)
    contexts = np.asarray(decode_contexts, dtype=np.int64)
    attended, prefix, decode = {}, {}, {}
    for w in windows(inst):
        attended[w] = sum(cm.attended_keys(start, n, w) for start, n, _ in chunks)
        prefix[w] = sum(start if w is None else min(start, w) for start, _, _ in chunks)
        decode[w] = int(contexts.sum() if w is None else np.minimum(contexts, w).sum())
    return StepBatch(sum(n for _, n, _ in chunks), len(contexts),
                     len(contexts) + sum(1 for _, _, ends in chunks if ends),
                     attended, prefix, decode)


def step_phase(inst: Instance, deg: Degrees, facts: LinkFacts, batch: StepBatch) -> PhaseCosts:
    """Per-layer integer costs of one micro-batch of the step (layers of one kind share
    their dense cost: computed once per (MoE?, window))."""
    m = inst.model
    kv_per_token = cm.kv_bytes_per_token_layer(m, deg.tp)
    core_per_key = cm.attention_core_flops_per_key(m)
    cache: dict[tuple[bool, int | None], tuple[int, int]] = {}
    dense = []
    for layer in range(m.num_layers):
        w = m.sliding_window if m.is_sliding(layer) else None
        key = (cm.is_moe_layer(m, layer), w)
        if key not in cache:
            flops = (batch.tokens * cm.linear_flops_per_token_layer(m, layer)
                     + core_per_key * batch.attended_keys[w]
                     + cm.decode_attention_flops_per_token(m, batch.decode_kv_tokens[w]))
            kv_bytes = ((batch.prefill_tokens + batch.prefix_kv_tokens[w]) * kv_per_token
                        + batch.decode_kv_tokens[w] * kv_per_token)
            cache[key] = dense_layer_ns(inst, deg, layer, batch.tokens, flops, kv_bytes, facts)
        dense.append(cache[key])
    return assemble_phase(inst, deg, facts, dense, moe_terms(inst, deg, batch.tokens, True, facts),
                          batch.tokens, batch.logits)


def step_ns(inst: Instance, deg: Degrees, facts: LinkFacts, stages: Sequence[Sequence[int]],
            hot: dict[int, int], batch: StepBatch, micro_batches: int = 1) -> int:
    """Time of one engine step of one replica, ns: ``batch`` is the largest of the step's
    ``micro_batches`` micro-batches; ``stages`` the layers of each pipeline stage; ``hot``
    the hot-rank load (parts of LOAD_SCALE) of each MoE layer."""
    if batch.tokens == 0:
        return 0
    phase = step_phase(inst, deg, facts, batch)
    p = len(stages)
    per_stage = [phase.stage_ns(layers, hot, j == 0, j == p - 1) for j, layers in enumerate(stages)]
    if batch.decode_requests:
        return decode_step_ns(per_stage, micro_batches, phase.p2p_ns)
    return makespan_ns(per_stage, micro_batches, phase.p2p_ns)
