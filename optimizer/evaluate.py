"""Evaluate a plan from the plan alone: structure, every constraint and every metric.

This is what ``moeopt check`` runs, on moeopt's own plans and on hand-written ones. It
reads no solver variable: degrees, stages, expert placement and the rank layout come from
the plan; costs come from ``tables.stage_costs`` (the same integer figures the CP-SAT model
is built from, so the two agree exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optimizer.layout import Degrees, GpuSlot
from optimizer.loads import expert_loads
from optimizer.schema import Instance
from optimizer.tables import LinkFacts, StageCosts, stage_costs
from optimizer.units import (LOAD_SCALE, NS_PER_MS, bytes_to_gb, ceil_div, gb_to_bytes_floor,
                             limit_s_to_ns, ns_to_ms, ns_to_s)


@dataclass(frozen=True)
class Plan:
    """A deployment: degrees, layers per stage, experts per EP rank per layer, layout."""

    instance: str
    deg: Degrees
    stages: tuple[tuple[int, ...], ...]
    placement: tuple[tuple[tuple[int, ...], ...], ...]  # [layer][ep_rank] -> expert ids
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
    """Every figure of a plan; integers in ns and bytes, floats only in properties."""

    costs: StageCosts
    hot_loads: list[int]
    stage_ns: list[int]
    makespan_ns: int
    objective_ns: int
    communication_ns: int
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
        return max(x * ep / LOAD_SCALE for x in self.hot_loads) - 1.0

    @property
    def throughput_tokens_per_ms(self) -> float:
        return self.tokens / ns_to_ms(self.makespan_ns)

    @property
    def max_memory_bytes(self) -> int:
        return max(s.total for s in self.stage_memory)

    def metrics(self) -> dict[str, float]:
        """The plan's metrics under the names of the interface contract."""
        return {
            "throughput_tokens_per_ms": self.throughput_tokens_per_ms,
            "throughput_tokens_per_ms_per_gpu": self.throughput_tokens_per_ms / self.num_gpus,
            "ttft_s": ns_to_s(self.makespan_ns),
            "max_memory_gb": bytes_to_gb(self.max_memory_bytes),
            "load_imbalance": self.load_imbalance,
            "communication_ms": ns_to_ms(self.communication_ns),
            "imbalance_ms": ns_to_ms(self.objective_ns - self.communication_ns),
            "objective_ms": ns_to_ms(self.objective_ns),
            "bubble_fraction": (self.costs.deg.pp - 1) / (self.costs.deg.micro_batches
                                                           + self.costs.deg.pp - 1),
        }


def hot_load(loads: tuple[int, ...], ranks: tuple[tuple[int, ...], ...]) -> int:
    """Routed load of the hottest EP rank of one layer, parts of LOAD_SCALE."""
    return max(sum(loads[e] for e in experts) for experts in ranks)


def makespan_ns(stage_ns: list[int], micro_batches: int, p2p_ns: int) -> int:
    """Batch makespan through the pipeline: sum_j t_j + (m-1) max_j t_j + (p-1) t_p2p."""
    return sum(stage_ns) + (micro_batches - 1) * max(stage_ns) + (len(stage_ns) - 1) * p2p_ns


def objective_ns(c: StageCosts, hot_loads: list[int]) -> int:
    """Average time a GPU loses over the batch to communication and to expert imbalance:
    m/p * (sum_l (moe_ns(L_l) - balanced compute) + layers * TP all-reduce) + m(p-1)/p * p2p."""
    d = c.deg
    per_pass = (sum(c.moe_ns(x) - c.moe_balanced_compute_ns for x in hot_loads)
                + len(hot_loads) * c.tp_comm_ns)
    return ceil_div(d.micro_batches * per_pass + d.micro_batches * (d.pp - 1) * c.p2p_ns, d.pp)


def communication_ns(c: StageCosts, hot_loads: list[int]) -> int:
    """The communication share of ``objective_ns`` (same averaging)."""
    d = c.deg
    per_pass = sum(c.moe_comm_ns(x) for x in hot_loads) + len(hot_loads) * c.tp_comm_ns
    return ceil_div(d.micro_batches * per_pass + d.micro_batches * (d.pp - 1) * c.p2p_ns, d.pp)


def makespan_limit_ns(inst: Instance, num_gpus: int) -> dict[str, int]:
    """Upper limits on the batch makespan from each timing requirement, ns.

    TTFT of a static batch is its prefill makespan (strictly below the target); throughput
    = prompt tokens / makespan, for the deployment or per GPU."""
    req, wl = inst.requirements, inst.workload
    limits: dict[str, int] = {}
    if req.max_ttft_s is not None:
        limits["ttft"] = limit_s_to_ns(req.max_ttft_s, strict=True)
    if req.min_throughput_tokens_per_ms:
        target = req.min_throughput_tokens_per_ms
        if req.throughput_scope == "per_gpu":
            target *= num_gpus
        tokens = wl.batch_sequences * wl.prompt_tokens
        limits["throughput"] = limit_s_to_ns(tokens / target / 1e3)
    return limits


def stage_memory(c: StageCosts, num_layers: int, first: bool, last: bool) -> StageMemory:
    """Per-GPU memory breakdown of a stage holding ``num_layers`` layers."""
    mp = c.memory
    weights = (num_layers * mp.layer_weights + (mp.embedding if first else 0)
               + (mp.head if last else 0))
    return StageMemory(weights, num_layers * mp.layer_kv, mp.activations, mp.buffers)


def evaluate(inst: Instance, plan: Plan) -> Evaluation:
    """All metrics and constraint checks of a structurally valid plan."""
    deg = plan.deg
    costs = stage_costs(inst, deg, LinkFacts.of(plan.slots))
    loads = expert_loads(inst)
    hot = [hot_load(loads[layer], plan.placement[layer]) for layer in range(inst.model.num_layers)]
    p = len(plan.stages)
    stage_times = [costs.stage_ns([hot[x] for x in layers], j == 0, j == p - 1)
                   for j, layers in enumerate(plan.stages)]
    mems = [stage_memory(costs, len(layers), j == 0, j == p - 1)
            for j, layers in enumerate(plan.stages)]
    wl = inst.workload
    ev = Evaluation(costs, hot, stage_times, makespan_ns(stage_times, deg.micro_batches, costs.p2p_ns),
                    objective_ns(costs, hot), communication_ns(costs, hot), mems,
                    wl.batch_sequences * wl.prompt_tokens, deg.num_gpus)
    ev.checks = requirement_checks(inst, ev)
    return ev


def requirement_checks(inst: Instance, ev: Evaluation) -> list[Check]:
    """Memory per GPU, TTFT and throughput against the instance's requirements."""
    checks = [Check("memory_per_gpu", bytes_to_gb(ev.max_memory_bytes), inst.memory_limit_gb, "GB",
                    ev.max_memory_bytes <= gb_to_bytes_floor(inst.memory_limit_gb))]
    limits = makespan_limit_ns(inst, ev.num_gpus)
    req = inst.requirements
    if "ttft" in limits:
        checks.append(Check("ttft", ns_to_s(ev.makespan_ns), req.max_ttft_s, "s",
                            ev.makespan_ns <= limits["ttft"]))
    if "throughput" in limits:
        per_gpu = req.throughput_scope == "per_gpu"
        value = ev.throughput_tokens_per_ms / (ev.num_gpus if per_gpu else 1)
        unit = "tokens/ms/GPU" if per_gpu else "tokens/ms"
        checks.append(Check("throughput", value, req.min_throughput_tokens_per_ms, unit,
                            ev.makespan_ns <= limits["throughput"]))
    return checks


__all__ = ["Plan", "Check", "Evaluation", "StageMemory", "evaluate", "hot_load", "makespan_ns",
           "objective_ns", "communication_ns", "makespan_limit_ns", "stage_memory", "NS_PER_MS"]
