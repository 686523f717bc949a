"""The serving settings a plan's figures assume, and the runtime versions exports target.

``RUNTIME_VERSIONS`` is the ONE place each runtime's version is pinned: the flags and keys the
exports write were checked against that version's argument parser (tests/fixtures/runtimes/).

``launch_settings(p, inst)`` reads, from the plan and its instance:

* ``max_running_requests``: requests one attention-DP replica runs at once. Static batch: the
  replica's whole batch (``batch_sequences`` over the attention-DP degree, as the cost tables
  count it); service: the plan's
  ``serving.max_running_requests``.
* ``chunk_tokens``: prompt tokens one engine step takes. Static batch: one micro-batch's
  prompts, ``sequences_per_micro_batch x prompt_tokens``; service: ``serving.prefill_chunk_tokens``.
* ``context_tokens``: the longest context, prompt + output tokens (a length distribution's
  ``max_tokens``; None when the lengths are unbounded or come from a trace).
* ``kv_dtype``: ``model.kv_dtype``; the memory parts of the heaviest GPU (GB), from
  ``optimizer.plan.evaluate`` plus the redundant experts' weights, which the cost model does
  not count (static batch), or the plan's ``max_memory_gb`` (service), and the GPU's memory
  (GB). Each runtime turns them into its own memory fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimizer.costs.tables import seqs_per_replica
from optimizer.costs.units import bytes_to_gb
from optimizer.errors import InputError
from optimizer.inputs.schema import Instance
from optimizer.plan.files import PlanData
from optimizer.plan.replicas import replica_weight_bytes

# The runtime versions the exports are written for (pinned here only).
RUNTIME_VERSIONS = {"sglang": "0.5.23", "vllm": "0.33.0", "trtllm": "1.2.1"}

# moeopt's KV dtype -> each runtime's spelling (None: the runtime's default, the model's dtype).
KV_DTYPE = {
    "sglang": {"fp16": None, "bf16": None, "fp32": None, "fp8": "fp8_e4m3"},
    "vllm": {"fp16": None, "bf16": None, "fp32": None, "fp8": "fp8"},
    "trtllm": {"fp16": None, "bf16": None, "fp32": None, "fp8": "fp8"},
}


@dataclass(frozen=True)
class LaunchSettings:
    """What the plan's TTFT, TPOT and memory assume, per attention-DP replica."""

    max_running_requests: int
    chunk_tokens: int
    context_tokens: int | None
    kv_dtype: str
    weights_gb: float | None       # heaviest GPU; None for services (only the total is known)
    kv_cache_gb: float | None
    total_gb: float                # heaviest GPU, every part
    gpu_memory_gb: float

    def fraction(self, used_gb: float) -> float | None:
        """``used_gb`` over the GPU's memory, rounded UP to 0.01 (the runtime gets at least
        what the plan counts); None when that is above 1 (see ``memory_warning``)."""
        if self.gpu_memory_gb <= 0:
            return None
        value = math.ceil(round(used_gb / self.gpu_memory_gb * 100, 6)) / 100
        return value if value <= 1 else None

    def memory_warning(self) -> str | None:
        """A warning when the plan's heaviest GPU does not fit the GPU's memory."""
        if self.total_gb <= self.gpu_memory_gb:
            return None
        return (f"the plan needs {self.total_gb:.2f} GB on its heaviest GPU, more than the GPU's "
                f"{self.gpu_memory_gb:.2f} GB: no memory fraction can hold it (left at the "
                "runtime's default); the server will not hold the planned KV cache")


def kv_dtype_flag(runtime: str, s: LaunchSettings) -> str | None:
    """The runtime's KV-cache dtype value, or None when the runtime's default is the plan's."""
    table = KV_DTYPE[runtime]
    if s.kv_dtype not in table:
        raise InputError(f"model.kv_dtype={s.kv_dtype!r}: {runtime} {RUNTIME_VERSIONS[runtime]} "
                         f"has no KV cache of that type (accepted: {', '.join(table)})")
    return table[s.kv_dtype]


def launch_settings(p: PlanData, inst: Instance) -> LaunchSettings:
    """The settings of ``p`` on ``inst`` (see the module docstring); InputError when the plan
    lacks what its kind needs (a service plan without its ``serving`` block)."""
    w = inst.workload
    gpu_gb = inst.hardware.gpu.memory_gb
    kv = inst.model.kv_dtype
    if w.kind == "service":
        knobs = serving_block(p)
        if knobs is None:
            raise InputError("serving: a service plan needs its serving block (four positive "
                             "integers: max_running_requests, prefill_chunk_tokens, "
                             "prefill_micro_batches, decode_micro_batches)")
        total = p.metrics.get("max_memory_gb")
        if not isinstance(total, (int, float)):
            raise InputError("metrics.max_memory_gb: a service plan's memory is needed for the "
                             "runtime's memory fraction")
        return LaunchSettings(knobs["max_running_requests"], knobs["prefill_chunk_tokens"],
                              _context(w.prompt_tokens, w.output_tokens), kv, None, None,
                              float(total), gpu_gb)
    from optimizer.plan.evaluate import evaluate
    ev = evaluate(inst, p.to_plan())
    replicas = [replica_bytes(p, inst, layers) for layers in p.stages]
    j = max(range(len(p.stages)), key=lambda k: ev.stage_memory[k].total + replicas[k])
    mem = ev.stage_memory[j]
    per_mb = ev.costs.seqs_per_micro_batch
    return LaunchSettings(seqs_per_replica(inst, p.deg.dp), per_mb * w.prompt_tokens,
                          w.prompt_tokens + w.output_tokens, kv,
                          bytes_to_gb(mem.weights + replicas[j]), bytes_to_gb(mem.kv_cache),
                          bytes_to_gb(mem.total + replicas[j]), gpu_gb)


def replica_bytes(p: PlanData, inst: Instance, layers) -> float:
    """Bytes the redundant experts add to one GPU of a stage holding ``layers``: the cost
    model counts ``E // EP`` experts per EP rank and MoE layer (``costs/tables.py``); a rank
    of a plan with replicas holds ``slots_per_rank`` of them, each split ETP ways."""
    e = p.experts
    moe = sum(1 for layer in layers if layer in e.slots)
    return replica_weight_bytes(inst.model, p.deg.ep, p.deg.etp, e.slots_per_rank, moe)


SERVING_KNOBS = ("max_running_requests", "prefill_chunk_tokens", "prefill_micro_batches",
                 "decode_micro_batches")


def serving_block(p: PlanData) -> dict[str, int] | None:
    """The plan's ``serving`` block (docs/serving-model.md), or None when it is missing or
    not four positive integers (the rule ``moeopt simulate`` applies)."""
    block = (p.file.model_extra or {}).get("serving")
    if not isinstance(block, dict):
        return None
    values = {name: block.get(name) for name in SERVING_KNOBS}
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 20
               for v in values.values()):
        return None
    return values


def _context(prompt, output) -> int | None:
    def longest(length) -> int | None:
        if length is None:
            return None
        if isinstance(length, int):
            return length
        return getattr(length, "max_tokens", None)
    a, b = longest(prompt), longest(output)
    return None if a is None or b is None else a + b


EXCHANGE_NAMES = {"deepep": "the DeepEP all-to-all", "allgather": "an all-gather + reduce-scatter"}


def moe_exchange_args(runtime: str, p: PlanData, moe_world: int, role: str | None = None
                      ) -> tuple[list[tuple[str, object]], list[str]]:
    """The runtime's flag for the MoE token exchange the plan's costs assume
    (``p.moe_token_exchange``, docs/runtimes.md), and warnings where the launch runs another.
    SGLang: ``--moe-a2a-backend deepep`` (its DeepEP needs ep = tp; its default deepep-mode
    auto runs the normal kernels for prefill and the low-latency ones for decode, as the
    costs do) or ``none`` (its all-gather path). vLLM: ``--all2all-backend``
    ``deepep_low_latency`` for a decode pool, ``deepep_high_throughput`` for any other server
    (one mode per server), or ``allgather_reducescatter``. TensorRT-LLM: none (no option of
    its LLM API chooses it; the export's notes say what the plan assumes). EP 1: nothing to
    exchange, no flag."""
    d, exchange = p.deg, p.moe_token_exchange
    if d.ep <= 1 or runtime not in ("sglang", "vllm"):
        return [], []
    if runtime == "sglang":
        if exchange == "allgather":
            return [("--moe-a2a-backend", "none")], []
        if d.ep != moe_world:
            return [], [f"the plan prices the DeepEP all-to-all, but SGLang's DeepEP backend needs "
                        f"ep = tp = {moe_world}: this hybrid EP{d.ep} x MoE-TP{moe_world // d.ep} runs "
                        "--moe-a2a-backend none (all-gather + reduce-scatter); solve with "
                        "hardware.moe_token_exchange \"allgather\" for figures on that path"]
        return [("--moe-a2a-backend", "deepep")], []
    if exchange == "allgather":
        return [("--all2all-backend", "allgather_reducescatter")], []
    if role == "decode":
        return [("--all2all-backend", "deepep_low_latency")], []
    warnings = [] if role == "prefill" else [
        "vLLM runs one DeepEP mode per server: deepep_high_throughput (the normal kernels) for "
        "every step, while the plan prices steps of at most 128 tokens per rank (decode) with "
        "the low-latency kernels"]
    return [("--all2all-backend", "deepep_high_throughput")], warnings


def version_line(runtime: str) -> str:
    how = ("flags checked against a schema of its source" if runtime == "trtllm"
           else "flags checked against its own parser")
    return f"written for {runtime} {RUNTIME_VERSIONS[runtime]}, {how}"


def missing_warning(runtime: str) -> str:
    return (f"no --instance: the KV-cache dtype, running-request cap, chunked-prefill size, "
            f"context length and memory fraction are left at {runtime}'s defaults, so the "
            "server will not run the workload whose TTFT, TPOT and memory the plan reports; "
            "give --instance")
