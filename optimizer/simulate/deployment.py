"""What the simulator needs of a plan: one replica's step-time function, its KV capacity and
its serving knobs (from the plan, else from the command line, else documented defaults); for
a disaggregated plan, one such deployment per pool (``disagg.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.costs import formulas as cm
from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.step_time import StepTimer
from optimizer.costs.tables import LinkFacts, memory_parts
from optimizer.costs.timing import hot_load
from optimizer.costs.units import gb_to_bytes_floor
from optimizer.errors import InfeasibleError, InputError
from optimizer.inputs.schema import Instance, Workload
from optimizer.plan.evaluate import Plan
from optimizer.plan.files import PlanFile, plan_from_file

KNOBS = ("max_running_requests", "prefill_chunk_tokens", "prefill_micro_batches",
         "decode_micro_batches")
DEFAULT_MAX_RUNNING_REQUESTS = 256  # vLLM's --max-num-seqs default
DEFAULT_PREFILL_CHUNK_TOKENS = 2048  # vLLM's --max-num-batched-tokens default for serving
KV_BLOCK_TOKENS = 16  # vLLM's default --block-size (SGLang's page size 1 is finer)
BOTH, PREFILL, DECODE = "both", "prefill", "decode"  # what a replica runs (replica.py)


@dataclass(frozen=True)
class Knobs:
    """Per-replica serving knobs: running-request cap, token budget of one step (decode
    tokens plus prompt chunk), micro-batches a prefill-only / decode step is cut into."""

    max_running_requests: int
    prefill_chunk_tokens: int
    prefill_micro_batches: int
    decode_micro_batches: int


@dataclass(frozen=True)
class Deployment:
    """One replica queue's costs; every queue of the plan (or of a pool) has the same ones.
    ``replicas``: queues (attention-DP ranks over every replica); ``role``: BOTH for an
    aggregated plan, PREFILL or DECODE for a pool of a disaggregated one."""

    replicas: int
    num_gpus: int
    knobs: Knobs
    kv_capacity_tokens: int
    timer: StepTimer  # step time of a micro-batch
    instance: Instance
    role: str = BOTH

    @property
    def kv_blocks(self) -> int:
        return self.kv_capacity_tokens // KV_BLOCK_TOKENS


def structural_plan(inst: Instance, doc: dict) -> Plan:
    """The plan's degrees, stages, placement and layout, checked as ``moeopt check`` does
    (the static-batch rules on sequences do not apply to a service); a broken plan is an
    input error naming the first rule it breaks."""
    from pydantic import ValidationError

    from optimizer.inputs.files import validation_message
    try:
        pf = PlanFile.model_validate(doc)
    except ValidationError as exc:
        raise InputError(validation_message("plan", exc)) from None
    # a batch view of the instance whose batch rules every plan meets
    batch = Workload(batch_sequences=10**7, prompt_tokens=1,
                     moe_buffer_factor=inst.workload.moe_buffer_factor)
    plan, checks = plan_from_file(inst.model_copy(update={"workload": batch}), pf)
    broken = [c.name for c in checks if not c.ok]
    if plan is None or broken:
        raise InputError(f"plan: breaks the rule {broken[0] if broken else 'structure'}")
    return plan


def plan_knobs(doc: dict, plan: Plan, options: dict[str, int | None]) -> Knobs:
    """Each knob from the plan (its ``serving`` object, else its top level), else from
    ``options``, else the default: 256 running requests, 2048 tokens per step, and as many
    micro-batches as pipeline stages (1 without a pipeline)."""
    defaults = {"max_running_requests": DEFAULT_MAX_RUNNING_REQUESTS,
                "prefill_chunk_tokens": DEFAULT_PREFILL_CHUNK_TOKENS,
                "prefill_micro_batches": plan.deg.pp, "decode_micro_batches": plan.deg.pp}
    serving = doc.get("serving") if isinstance(doc.get("serving"), dict) else {}
    values = {}
    for key in KNOBS:
        value = serving.get(key, doc.get(key))
        where = f"plan {key}"
        if value is None:
            value, where = options.get(key), f"--{key.replace('_', '-')}"
        if value is None:
            value, where = defaults[key], f"default {key}"
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10**7:
            raise InputError(f"{where}={value!r}: must be an integer from 1 to 10000000")
        values[key] = value
    knobs = Knobs(**values)
    if knobs.prefill_chunk_tokens < knobs.max_running_requests:
        raise InputError(f"prefill_chunk_tokens={knobs.prefill_chunk_tokens} < max_running_requests="
                         f"{knobs.max_running_requests}: a step must fit one token of every running "
                         "request (vLLM's rule)")
    return knobs


def kv_capacity_tokens(inst: Instance, plan: Plan, step_tokens: int) -> int:
    """KV tokens one replica holds: per stage, the memory limit minus weights, activations
    and buffers of a step of ``step_tokens`` (``tables.memory_parts``), over the KV bytes
    of one token on that stage's layers (every layer at full context); the tightest stage."""
    m, deg = inst.model, plan.deg
    parts = memory_parts(inst, deg, step_tokens, [0.0] * m.num_layers)
    limit = gb_to_bytes_floor(inst.memory_limit_gb)
    per_token = cm.kv_bytes_per_token_layer(m, deg.tp)
    tokens = []
    for j, layers in enumerate(plan.stages):
        fixed = (parts.activations + parts.buffers
                 + parts.stage_weights(layers, j == 0, j == len(plan.stages) - 1))
        tokens.append(int((limit - fixed) // (per_token * len(layers))))
    capacity = min(tokens)
    if capacity < KV_BLOCK_TOKENS:
        raise InfeasibleError(f"the plan leaves {max(capacity, 0)} tokens of KV cache per replica "
                              f"(memory limit {inst.memory_limit_gb:g} GB per GPU): nothing can run")
    return capacity


def deployment(inst: Instance, doc: dict, options: dict[str, int | None], role: str = BOTH,
               copies: int = 1) -> Deployment:
    """Everything the simulator needs of the plan document ``doc`` for ``inst``; ``copies``
    identical replicas of it (a pool's ``replicas``) each bring their ``dp`` queues."""
    plan = structural_plan(inst, doc)
    knobs = plan_knobs(doc, plan, options)
    hot = {l: hot_load(row, plan.placement[l])
           for l, row in zip(inst.model.moe_layer_ids, expert_loads(inst))}
    facts = LinkFacts.of(plan.slots)
    timer = StepTimer(inst, plan.deg, facts, plan.stages, hot)
    return Deployment(copies * plan.deg.dp, copies * plan.deg.num_gpus, knobs,
                      kv_capacity_tokens(inst, plan, knobs.prefill_chunk_tokens), timer, inst, role)
