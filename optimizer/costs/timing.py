"""Timing arithmetic of a configuration, in integer ns: prefill makespan and decode step of a
layer-to-stage split, time lost per GPU (communication, expert imbalance, pipeline idling), and
the upper limits each timing requirement puts on them. Shared by the CP-SAT model, its bounds
and the plan evaluator, so all three agree to the nanosecond.
"""

from __future__ import annotations

from optimizer.costs.tables import PhaseCosts, StageCosts
from optimizer.costs.units import ceil_div, limit_s_to_ns
from optimizer.inputs.schema import Instance


def hot_load(loads: tuple[int, ...], ranks) -> int:
    """Routed load of the hottest EP rank of one layer, parts of LOAD_SCALE. An expert held
    by k ranks (redundant replicas) gives each ceil(load / k) (the runtimes split its tokens
    evenly over its replicas); without replicas this is the plain sum."""
    copies: dict[int, int] = {}
    for experts in ranks:
        for e in experts:
            copies[e] = copies.get(e, 0) + 1
    return max(sum(-(-loads[e] // copies[e]) for e in experts) for experts in ranks)


def makespan_ns(stage_ns: list[int], micro_batches: int, p2p_ns: int) -> int:
    """Prefill makespan of the batch: sum_j t_j + (m-1) max_j t_j + (p-1) t_p2p."""
    return sum(stage_ns) + (micro_batches - 1) * max(stage_ns) + (len(stage_ns) - 1) * p2p_ns


def decode_step_ns(stage_ns: list[int], micro_batches: int, p2p_ns: int) -> int:
    """One decode step (every sequence advances one token): max(m, p) * max_j t_j
    + (p-1) t_p2p (docs/cost-model.md §1.6; with m < p some stages idle)."""
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
