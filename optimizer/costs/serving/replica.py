"""A service configuration as the serving model sees it: request sizes from the workload,
the configurations (degrees without a batch), and per configuration the engine-step time
(``costs.step_time.StepTimer``, memoized) and the memory that limits the running-request cap.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np

from optimizer.costs import formulas as cm
from optimizer.costs.candidates import divisors, tp_admissible
from optimizer.costs.layout import Degrees
from optimizer.costs.serving.knobs import ReplicaMemory, RuntimePool, ServingKnobs
from optimizer.costs.serving.metrics import PERCENTILES, Replica, ServiceLoad
from optimizer.costs.step_time import StepTimer
from optimizer.costs.tables import LinkFacts, MemoryParts, memory_parts
from optimizer.costs.units import ceil_div, ceil_int, gb_to_bytes_floor
from optimizer.errors import InputError
from optimizer.inputs.schema import Instance, ServiceWorkload
from optimizer.inputs.service import draw_lengths
from optimizer.inputs.traces import Trace

_SAMPLE = 100_000  # lengths drawn (seed 0) for the moments of a length distribution
LENGTH_POINTS = 32  # equally likely output and prompt lengths the TPOT and TTFT percentiles mix over


def _moments(length) -> tuple[float, float, tuple[int, ...]]:
    """(mean, squared coefficient of variation, lengths at ``PERCENTILES``; empty for a fixed
    count) of a token count or distribution."""
    if isinstance(length, int):
        return float(length), 0.0, ()
    return _sample_moments(draw_lengths(length, _SAMPLE, np.random.default_rng(0)))


def _sample_moments(lengths) -> tuple[float, float, tuple[int, ...]]:
    x = np.asarray(lengths, dtype=float)
    at = tuple(int(v) for v in np.percentile(x, PERCENTILES, method="inverted_cdf"))
    return float(x.mean()), float(x.var() / x.mean() ** 2), at


def service_load(wl: ServiceWorkload, trace: Trace | None = None) -> ServiceLoad:
    """Mean prompt and output tokens, the prompts' squared coefficient of variation and
    their percentiles, of the workload's lengths (a trace's rows when it has one)."""
    if wl.trace is not None:
        if trace is None:
            raise InputError(f"workload.trace={wl.trace!r}: the planner needs the trace's lengths")
        prompt_mean, cv2, at = _sample_moments(trace.prompt_tokens)
        output = float(np.mean(trace.output_tokens))
        return ServiceLoad(round(prompt_mean), max(1, round(output)), cv2, at, _points(trace.output_tokens),
                           _points(trace.prompt_tokens) if cv2 > 0 else ())
    prompt_mean, cv2, at = _moments(wl.prompt_tokens)
    output_mean, _, _ = _moments(wl.output_tokens)
    outputs = () if isinstance(wl.output_tokens, int) else _points(
        draw_lengths(wl.output_tokens, _SAMPLE, np.random.default_rng(1)))
    prompts = () if isinstance(wl.prompt_tokens, int) else _points(
        draw_lengths(wl.prompt_tokens, _SAMPLE, np.random.default_rng(0)))  # the moments' sample
    return ServiceLoad(max(1, round(prompt_mean)), max(1, round(output_mean)), cv2, at, outputs, prompts)


def _points(lengths) -> tuple[int, ...]:
    """``LENGTH_POINTS`` equally likely lengths (outputs and prompts alike): the quantiles at (i + 1/2) / LENGTH_POINTS."""
    levels = (np.arange(LENGTH_POINTS) + 0.5) / LENGTH_POINTS * 100
    return tuple(int(v) for v in np.percentile(np.asarray(lengths), levels, method="inverted_cdf"))


def service_degrees(inst: Instance, num_gpus: int) -> list[Degrees]:
    """Every (tp, pp, dp, ep, etp, edp) on exactly ``num_gpus`` GPUs, by the rules of
    ``costs.candidates.admissible_degrees`` without a batch (micro-batches are knobs)."""
    m = inst.model
    out = []
    for tp in divisors(num_gpus):
        if not tp_admissible(inst, tp):
            continue
        for pp in divisors(num_gpus // tp):
            if pp > m.num_layers:
                continue
            dp = num_gpus // (tp * pp)
            for ep in divisors(m.num_experts):
                for etp in divisors(tp):
                    if (tp * dp) % (ep * etp) or m.expert_ffn_size % etp:
                        continue
                    out.append(Degrees(tp, pp, dp, ep, etp, tp * dp // (ep * etp), 1))
    return out


def even_stages(num_layers: int, pp: int) -> tuple[tuple[int, ...], ...]:
    """Layers split into ``pp`` contiguous stages, the first ``num_layers % pp`` one longer."""
    counts = [num_layers // pp + (j < num_layers % pp) for j in range(pp)]
    starts = [sum(counts[:j]) for j in range(pp)]
    return tuple(tuple(range(s, s + c)) for s, c in zip(starts, counts))


def replica_memory(inst: Instance, deg: Degrees, stages, load: ServiceLoad) -> ReplicaMemory:
    """Heaviest stage's weights + buffers, KV of one request at its final context on the
    stage with most layers (every layer at full context, as the simulator counts it), and
    the activations and token buffers per step token (``tables.memory_parts``, linear in the
    step's tokens)."""
    one, none = memory_parts(inst, deg, 1, []), memory_parts(inst, deg, 0, [])
    p = len(stages)
    weights = max(none.stage_weights(layers, j == 0, j == p - 1) for j, layers in enumerate(stages))
    per_token_layer = cm.kv_bytes_per_token_layer(inst.model, deg.tp)
    kv = ceil_int(per_token_layer * max(len(layers) for layers in stages)
                  * (load.prompt_tokens + load.output_tokens))
    per_token = one.activations + one.buffers - none.activations - none.buffers
    return ReplicaMemory(weights + none.buffers + none.activations, kv, per_token,
                         gb_to_bytes_floor(inst.memory_limit_gb), runtime_pool(inst, weights, none))


def runtime_pool(inst: Instance, weight_bytes: int, fixed: MemoryParts) -> RuntimePool | None:
    """``hardware.kv_pool_runtime``'s rule on one GPU of ``weight_bytes`` (None without one):
    the token-independent activations as the step's fixed part, buffers and reserve as the
    runtime's non-tensor memory."""
    hw = inst.hardware
    if hw.kv_pool_runtime is None:
        return None
    return RuntimePool(hw.kv_pool_runtime, hw.kv_pool_memory_fraction, gb_to_bytes_floor(hw.gpu.memory_gb),
                       weight_bytes, fixed.activations, fixed.buffers)


def _chunks(chunk_tokens: int, load: ServiceLoad) -> list[tuple[int, int, bool]]:
    """The prompt chunks of a step's ``chunk_tokens``: whole prompts when the budget holds
    some, else one chunk starting at the mean start (s - C) / 2 of a prompt's chunks, moved
    on by ``spread_offset_tokens`` (a token-weighted prompt is longer than the mean one)."""
    prompt_tokens = load.prompt_tokens
    if chunk_tokens == 0:
        return []
    if chunk_tokens >= prompt_tokens:
        whole, rest = divmod(chunk_tokens, prompt_tokens)
        return [(0, prompt_tokens, True)] * whole + ([(0, rest, False)] if rest else [])
    return [((prompt_tokens - chunk_tokens) // 2 + spread_offset_tokens(load), chunk_tokens, False)]


def spread_offset_tokens(load: ServiceLoad) -> int:
    """o = cv^2 s / 2 (rounded): the keys a prompt token attends to beyond those of a prompt
    of the mean length s. A token drawn from all prompt tokens sits in a prompt of length
    s' with probability s' / s (length-biased) at a uniform position, so it attends to
    E[s'^2] / (2 s) = (1 + cv^2) s / 2 keys on average, not s / 2."""
    return round(load.prompt_cv2 * load.prompt_tokens / 2)


def _with_spread(batch, chunks: list[tuple[int, int, bool]], offset: int, first_is_own: bool = False):
    """``batch`` with the attended keys of whole-prompt chunks counted from ``offset`` (their
    cached prefix stays 0: a whole prompt reads no cache; a part-way chunk's start already
    holds the offset, ``_chunks``): n o + n (n + 1) / 2 keys for a prompt of n tokens.
    ``first_is_own``: the first chunk is a prompt of known length (no offset)."""
    if offset == 0 or not chunks:
        return batch
    attended = {w: sum(cm.attended_keys(start + (offset if start == 0 and (i or not first_is_own) else 0), n, w)
                       for i, (start, n, _) in enumerate(chunks))
                for w in batch.attended_keys}
    return replace(batch, attended_keys=attended)


def on_grid(count: int) -> int:
    """``count`` rounded up to 32 values per octave above 32 (at most 1/32 more): the
    decode counts the step time is computed at, so that few distinct steps are costed."""
    if count <= 32:
        return count
    unit = 1 << (count.bit_length() - 6)
    return ceil_div(count, unit) * unit


def replica(inst: Instance, deg: Degrees, facts: LinkFacts, stages, hot: dict[int, int],
            load: ServiceLoad) -> Replica:
    """The serving model's view of one configuration: its memoized engine-step time, its DP
    queues and GPUs. A step's micro-batches are dealt as the simulator deals them: its
    prompt chunks then its decodes, round-robin over m = min(m_d, items) micro-batches when
    it has decodes (min(m_p, chunks) when not); the step takes ``StepTimer.ns`` of the
    largest (the first). Decode counts are rounded up by ``on_grid``; prompt attention is
    costed for the spread of prompt lengths (``spread_offset_tokens``). ``lead_step_ns``: the
    same step with a prompt of a given length first (its chunk in the first micro-batch);
    ``prompts_step_ns``: a step of given prompts (their own attention, no spread offset),
    whole in order until the room C - k is full, the one that does not fit as a chunk of it
    at the mean start (s' - room) / 2 of its chunks, beside k decodes."""
    timer = StepTimer(inst, deg, facts, tuple(tuple(s) for s in stages), hot)
    offset = spread_offset_tokens(load)

    @cache
    def cached(chunk: int, decodes: int, context: int, m_p: int, m_d: int) -> int:
        chunks = _chunks(chunk, load)
        items = len(chunks) + decodes
        m = max(1, min(m_d if decodes else m_p, items))
        first_chunks = chunks[0::m]
        # items i in [len(chunks), items) with i % m == 0: ceil(items / m) - ceil(len(chunks) / m)
        first_decodes = -(-items // m) - (-(-len(chunks) // m))
        batch = timer.batch(first_chunks, np.full(first_decodes, context, dtype=np.int64))
        return timer.ns(_with_spread(batch, first_chunks, offset), m)

    def step_ns(knobs: ServingKnobs, chunk: int, decodes: int, context: int) -> int:
        return cached(chunk, on_grid(decodes), context, knobs.prefill_micro_batches,
                      knobs.decode_micro_batches)

    @cache
    def lead_cached(prompt: int, chunk: int, decodes: int, context: int, m_p: int, m_d: int) -> int:
        lead = min(prompt, chunk)  # a longer prompt's chunk starts at the mean start (s' - C) / 2
        rest = chunk - lead  # the first tokens of the prompts behind it
        behind = _chunks(rest, load) if rest >= load.prompt_tokens else [(0, rest, False)] if rest else []
        chunks = [((prompt - lead) // 2, lead, lead == prompt)] + behind
        items = len(chunks) + decodes
        m = max(1, min(m_d if decodes else m_p, items))
        first_chunks = chunks[0::m]
        first_decodes = -(-items // m) - (-(-len(chunks) // m))
        batch = timer.batch(first_chunks, np.full(first_decodes, context, dtype=np.int64))
        return timer.ns(_with_spread(batch, first_chunks, offset, first_is_own=True), m)

    def lead_step_ns(knobs: ServingKnobs, prompt: int, chunk: int, decodes: int, context: int) -> int:
        return lead_cached(prompt, chunk, on_grid(decodes), context, knobs.prefill_micro_batches,
                           knobs.decode_micro_batches)

    @cache
    def chunks_cached(chunks: tuple[tuple[int, int, bool], ...], decodes: int, context: int, m: int) -> int:
        items = len(chunks) + decodes
        m = max(1, min(m, items))
        first_chunks = list(chunks[0::m])
        first_decodes = -(-items // m) - (-(-len(chunks) // m))
        return timer.ns(timer.batch(first_chunks, np.full(first_decodes, context, dtype=np.int64)), m)

    def prompts_step_ns(knobs: ServingKnobs, lengths: tuple[int, ...], decodes: int, context: int) -> int:
        decodes = on_grid(decodes)
        chunks, room = [], knobs.prefill_chunk_tokens - decodes
        for length in lengths:  # whole prompts in order until the room is full; a prompt
            if room <= 0:  # longer than what is left: a chunk of it, at the mean start of its chunks
                break
            chunks.append((0, length, True) if length <= room else ((length - room) // 2, room, False))
            room -= length
        micro = knobs.decode_micro_batches if decodes else knobs.prefill_micro_batches
        return chunks_cached(tuple(chunks), decodes, context, micro)

    return Replica(step_ns, queues=deg.dp, gpus=deg.num_gpus, lead_step_ns=lead_step_ns,
                   prompts_step_ns=prompts_step_ns)
