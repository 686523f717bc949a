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
from optimizer.tables import LinkFacts, PhaseCosts, StageCosts, stage_costs
from optimizer.units import (LOAD_SCALE, NS_PER_MS, bytes_to_gb, ceil_div, gb_to_bytes_floor,
                             limit_s_to_ns, ns_to_ms, ns_to_s)


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


def hot_load(loads: tuple[int, ...], ranks) -> int:
    """Routed load of the hottest EP rank of one layer, parts of LOAD_SCALE."""
    return max(sum(loads[e] for e in experts) for experts in ranks)


def makespan_ns(stage_ns: list[int], micro_batches: int, p2p_ns: int) -> int:
    """Prefill makespan of the batch: sum_j t_j + (m-1) max_j t_j + (p-1) t_p2p."""
    return sum(stage_ns) + (micro_batches - 1) * max(stage_ns) + (len(stage_ns) - 1) * p2p_ns


def decode_step_ns(stage_ns: list[int], micro_batches: int, p2p_ns: int) -> int:
    """One decode step (every sequence advances one token): max(m, p) * max_j t_j
    + (p-1) t_p2p (cost-model §1.6; with m < p some stages idle)."""
    p = len(stage_ns)
    return max(micro_batches, p) * max(stage_ns) + (p - 1) * p2p_ns


def lost_ns(ph: PhaseCosts, d, phase_ns: int, num_moe_layers: int) -> int:
    """Average time a GPU loses in one phase (prefill makespan, or one decode step of
    ``phase_ns``): everything but useful work, i.e. communication, expert imbalance and
    pipeline idling (bubble, uneven stages): ceil((p T - m U + m (p-1) t_p2p) / p), with U
    the useful work of one micro-batch through every stage."""
    m, p = d.micro_batches, d.pp
    return ceil_div(p * phase_ns - m * ph.useful_pass_ns(num_moe_layers) + m * (p - 1) * ph.p2p_ns, p)


def objective_ns(c: StageCosts, ttft_ns: int, tpot_ns: int, num_moe_layers: int) -> int:
    """Time lost per GPU over the batch: the prefill's, plus each decode step's."""
    total = lost_ns(c.prefill, c.deg, ttft_ns, num_moe_layers)
    if c.decode is not None:
        total += c.decode_steps * lost_ns(c.decode, c.deg, tpot_ns, num_moe_layers)
    return total


def _phase_share(ph: PhaseCosts, d, hot: list[int], part: str) -> int:
    """Average time a GPU spends per phase pass on communication ('comm') or on waiting
    for the hottest expert rank ('imbalance'), ns."""
    if part == "comm":
        per_pass = sum(ph.moe_comm_ns(x) for x in hot) + sum(ph.tp_comm_ns)
        return ceil_div(d.micro_batches * per_pass + d.micro_batches * (d.pp - 1) * ph.p2p_ns, d.pp)
    per_pass = sum(ph.moe_ns(x) - ph.moe_comm_ns(x) - ph.moe_balanced_compute_ns for x in hot)
    return ceil_div(d.micro_batches * max(0, per_pass), d.pp)


def communication_ns(c: StageCosts, hot_loads: list[int]) -> int:
    """Average communication time per GPU over the batch (TP all-reduces, all-to-all and
    ETP collectives, pipeline sends), ns."""
    return sum(w * _phase_share(ph, c.deg, hot_loads, "comm") for ph, w in c.phases)


def imbalance_ns(c: StageCosts, hot_loads: list[int]) -> int:
    """Average time per GPU spent waiting for the hottest expert rank, ns."""
    return sum(w * _phase_share(ph, c.deg, hot_loads, "imbalance") for ph, w in c.phases)


def batch_times(c: StageCosts, stages, hot: dict[int, int]) -> tuple[list[int], int, int, int]:
    """(prefill stage times, TTFT, TPOT, batch makespan) of a split, ns."""
    p, m = len(stages), c.deg.micro_batches
    pre = [c.prefill.stage_ns(layers, hot, j == 0, j == p - 1) for j, layers in enumerate(stages)]
    ttft = makespan_ns(pre, m, c.prefill.p2p_ns)
    tpot = 0
    if c.decode is not None:
        dec = [c.decode.stage_ns(layers, hot, j == 0, j == p - 1) for j, layers in enumerate(stages)]
        tpot = decode_step_ns(dec, m, c.decode.p2p_ns)
    return pre, ttft, tpot, ttft + c.decode_steps * tpot


def makespan_limit_ns(inst: Instance, num_gpus: int) -> dict[str, int]:
    """Upper limits from each timing requirement, ns: 'ttft' bounds the prefill makespan
    (strictly below the target), 'tpot' one decode step, 'throughput' the batch makespan
    (tokens = prompt + generated tokens of the batch, for the deployment or per GPU)."""
    req, wl = inst.requirements, inst.workload
    limits: dict[str, int] = {}
    if req.max_ttft_s is not None:
        limits["ttft"] = limit_s_to_ns(req.max_ttft_s, strict=True)
    if req.max_tpot_ms is not None and wl.output_tokens:
        limits["tpot"] = limit_s_to_ns(req.max_tpot_ms / 1e3)
    if req.min_throughput_tokens_per_ms:
        target = req.min_throughput_tokens_per_ms
        if req.throughput_scope == "per_gpu":
            target *= num_gpus
        tokens = wl.batch_sequences * (wl.prompt_tokens + wl.output_tokens)
        limits["throughput"] = limit_s_to_ns(tokens / target / 1e3)
    return limits


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


