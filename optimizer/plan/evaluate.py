"""Evaluate a plan from the plan alone: structure, every constraint and every metric.

This is what ``moeopt check`` runs, on moeopt's own plans and on hand-written ones. It
reads no solver variable: degrees, stages, expert placement and the rank layout come from
the plan; costs come from ``tables.stage_costs`` (the same integer figures the CP-SAT model
is built from, so the two agree exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.layout import Degrees, GpuSlot
from optimizer.costs.tables import LinkFacts, StageCosts, stage_costs
from optimizer.costs.timing import (
    batch_times,
    communication_ns,
    hot_load,
    imbalance_ns,
    makespan_limit_ns,
    objective_ns,
)
from optimizer.costs.units import (
    LOAD_SCALE,
    bytes_to_gb,
    gb_to_bytes_floor,
    ns_to_ms,
    ns_to_s,
)
from optimizer.inputs.schema import Instance


@dataclass(frozen=True)
class Plan:
    """A deployment: degrees, layers per stage, experts per EP rank per layer, layout."""

    instance: str
    deg: Degrees
    stages: tuple[tuple[int, ...], ...]
    placement: dict[int, tuple[tuple[int, ...], ...]]  # MoE layer -> [ep_rank] -> expert ids
    slots: tuple[GpuSlot, ...]


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    unit: str
    ok: bool


@dataclass(frozen=True)
class StageMemory:
    weights: int
    kv_cache: int
    activations: int
    buffers: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.buffers


@dataclass
class Evaluation:
    """Every figure of a plan; integers in ns and bytes, floats only in properties.

    ``makespan_ns`` is the whole batch (prefill, then every decode step); ``ttft_ns`` the
    prefill makespan; ``tpot_ns`` one decode step (0 without decode)."""

    costs: StageCosts
    hot_loads: list[int]  # per MoE layer, in moe_layer_ids order
    stage_ns: list[int]  # prefill, per stage and micro-batch
    ttft_ns: int
    tpot_ns: int
    makespan_ns: int
    objective_ns: int
    communication_ns: int
    imbalance_ns: int
    stage_memory: list[StageMemory]
    tokens: int
    num_gpus: int
    checks: list[Check] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def load_imbalance(self) -> float:
        """max over MoE layers of hottest-rank load / mean rank load - 1."""
        ep = self.costs.deg.ep
        return max((x * ep / LOAD_SCALE for x in self.hot_loads), default=1.0) - 1.0

    @property
    def throughput_tokens_per_ms(self) -> float:
        """Tokens the batch processes (prompt + generated) per ms of the batch makespan."""
        return self.tokens / ns_to_ms(self.makespan_ns)

    @property
    def max_memory_bytes(self) -> int:
        return max(s.total for s in self.stage_memory)

    def metrics(self) -> dict[str, float]:
        """The plan's metrics under the names of the interface contract (plus extras)."""
        d = self.costs.deg
        out = {
            "throughput_tokens_per_ms": self.throughput_tokens_per_ms,
            "throughput_tokens_per_ms_per_gpu": self.throughput_tokens_per_ms / self.num_gpus,
            "ttft_s": ns_to_s(self.ttft_ns),
            "max_memory_gb": bytes_to_gb(self.max_memory_bytes),
            "load_imbalance": self.load_imbalance,
            "communication_ms": ns_to_ms(self.communication_ns),
            "imbalance_ms": ns_to_ms(self.imbalance_ns),
            "pipeline_idle_ms": ns_to_ms(max(0, self.objective_ns - self.communication_ns
                                             - self.imbalance_ns)),
            "objective_ms": ns_to_ms(self.objective_ns),
            "bubble_fraction": (d.pp - 1) / (d.micro_batches + d.pp - 1),
            "batch_time_s": ns_to_s(self.makespan_ns),
        }
        if self.costs.decode is not None:
            out["tpot_ms"] = ns_to_ms(self.tpot_ns)
        return out


def stage_memory(c: StageCosts, layers, first: bool, last: bool) -> StageMemory:
    """Per-GPU memory breakdown of a stage holding ``layers``."""
    mp = c.memory
    return StageMemory(mp.stage_weights(layers, first, last), mp.stage_kv(layers),
                       mp.activations, mp.buffers)


def evaluate(inst: Instance, plan: Plan) -> Evaluation:
    """All metrics and constraint checks of a structurally valid plan."""
    deg = plan.deg
    costs = stage_costs(inst, deg, LinkFacts.of(plan.slots))
    moe_ids = inst.model.moe_layer_ids
    hot = {l: hot_load(row, plan.placement[l]) for l, row in zip(moe_ids, expert_loads(inst))}
    hot_list = [hot[l] for l in moe_ids]
    p = len(plan.stages)
    pre, ttft, tpot, total = batch_times(costs, plan.stages, hot)
    mems = [stage_memory(costs, layers, j == 0, j == p - 1) for j, layers in enumerate(plan.stages)]
    wl = inst.workload
    ev = Evaluation(costs, hot_list, pre, ttft, tpot, total,
                    objective_ns(costs, ttft, tpot, len(moe_ids)), communication_ns(costs, hot_list),
                    imbalance_ns(costs, hot_list), mems,
                    wl.batch_sequences * (wl.prompt_tokens + wl.output_tokens), deg.num_gpus)
    ev.checks = requirement_checks(inst, ev)
    return ev


# How each requirement check compares its value with its limit.
RELATION = {"memory_per_gpu": "<=", "ttft": "<", "tpot": "<=", "throughput": ">="}


def requirement_checks(inst: Instance, ev: Evaluation) -> list[Check]:
    """Memory per GPU, TTFT and throughput against the instance's requirements."""
    checks = [Check("memory_per_gpu", bytes_to_gb(ev.max_memory_bytes), inst.memory_limit_gb, "GB",
                    ev.max_memory_bytes <= gb_to_bytes_floor(inst.memory_limit_gb))]
    limits = makespan_limit_ns(inst, ev.num_gpus)
    req = inst.requirements
    if "ttft" in limits:
        checks.append(Check("ttft", ns_to_s(ev.ttft_ns), req.max_ttft_s, "s",
                            ev.ttft_ns <= limits["ttft"]))
    if "tpot" in limits:
        checks.append(Check("tpot", ns_to_ms(ev.tpot_ns), req.max_tpot_ms, "ms",
                            ev.tpot_ns <= limits["tpot"]))
    if "throughput" in limits:
        per_gpu = req.throughput_scope == "per_gpu"
        value = ev.throughput_tokens_per_ms / (ev.num_gpus if per_gpu else 1)
        unit = "tokens/ms/GPU" if per_gpu else "tokens/ms"
        checks.append(Check("throughput", value, req.min_throughput_tokens_per_ms, unit,
                            ev.makespan_ns <= limits["throughput"]))
    return checks


