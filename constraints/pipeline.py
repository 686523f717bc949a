"""Pipeline: layer times, contiguous layer-to-stage assignment, stage times, batch timing.

Per phase (prefill; and one decode step when the workload generates tokens):
- ``moe_time[phase][i]`` >= the hot-rank MoE time of the i-th MoE layer under the chosen
  configuration (two linear roofline pieces, see ``tables.PhaseCosts.moe_ns``);
- stage time per micro-batch >= its layers' dense times (per layer: dense and MoE layers
  differ) + their MoE times + embedding (first stage) + LM head (last stage).
Per candidate PP degree p, ``in_stage[p][l][j]``: layer l on stage j; stages are contiguous
and non-empty (stage index non-decreasing by steps of 0 or 1, first layer on stage 0, last
on stage p-1). Then
- TTFT >= sum_j t_j + (m-1) max_j t_j + (p-1) t_p2p (prefill makespan of the batch);
- TPOT >= max(m, p) max_j t_j + (p-1) t_p2p (one decode step);
- batch makespan = TTFT + decode_steps * TPOT.
Every bound is a lower bound the solver may meet with equality; requirements put upper
limits on TTFT, TPOT and the makespan, and the lexicographic second objective minimizes the
makespan.
"""

from __future__ import annotations

from optimizer.costs.units import LOAD_SCALE
from optimizer.cpsat.context import DEGREES, PIPELINE, PLACEMENT, Context, ModelData, Timing

NEEDS = (DEGREES, PLACEMENT)
PROVIDES = PIPELINE

PREFILL, DECODE = 0, 1


def phase_of(config, phase: int):
    """The configuration's cost table of ``phase`` (PREFILL or DECODE)."""
    return config.prefill if phase == PREFILL else config.decode


def _full_loads(data: ModelData) -> dict[int, int]:
    """Every MoE layer at its whole load (an upper bound on any rank's load)."""
    return {layer: LOAD_SCALE for layer in data.moe_ids}


def _moe_times(ctx: Context, phase: int) -> list:
    """moe_time[i] >= hot-rank MoE time of MoE layer i for the chosen configuration."""
    model, data, config_var = ctx.model, ctx.data, ctx.choice.config
    top = max(phase_of(config, phase).moe_ns(LOAD_SCALE) for config in data.cfgs)
    times = [model.new_int_var(0, top, f"moe_time[{phase},{l}]") for l in data.moe_ids]
    for k, config in enumerate(data.cfgs):
        costs = phase_of(config, phase)
        comm, alpha = costs.moe_comm_full_ns, costs.moe_latency_ns
        for i, hot in enumerate(ctx.placement.hot[config.deg.ep]):
            time = times[i]
            if isinstance(hot, int):
                model.add(time >= costs.moe_ns(hot)).only_enforce_if(config_var[k])
                continue
            model.add(LOAD_SCALE * time >= (costs.moe_compute_full_ns + comm) * hot
                      + LOAD_SCALE * alpha).only_enforce_if(config_var[k])
            model.add(LOAD_SCALE * time >= LOAD_SCALE * (costs.moe_weights_ns + alpha)
                      + (costs.moe_act_full_ns + comm) * hot).only_enforce_if(config_var[k])
    return times


def _stage_assignment(ctx: Context, pp: int) -> list[list]:
    """in_stage[l][j] for PP degree ``pp``, with contiguity (None where a layer cannot sit)."""
    model, n = ctx.model, ctx.data.num_layers
    if pp == 1:
        return [[None] for _ in range(n)]
    grid: list[list] = []
    stage_of = []
    for l in range(n):
        # Layer l can only sit on stages max(0, l-(n-pp)) .. min(l, pp-1) (stages non-empty).
        row = [model.new_bool_var(f"in_stage[p={pp},l={l},j={j}]")
               if max(0, l - (n - pp)) <= j <= min(l, pp - 1) else None for j in range(pp)]
        model.add_exactly_one(var for var in row if var is not None)
        grid.append(row)
        stage_of.append(sum(j * var for j, var in enumerate(row) if var is not None))
    for l in range(n - 1):
        model.add(stage_of[l] <= stage_of[l + 1])
        model.add(stage_of[l + 1] <= stage_of[l] + 1)
    model.add(stage_of[0] == 0)
    model.add(stage_of[n - 1] == pp - 1)
    return grid


def on_stage(ctx: Context, pp: int, layer: int, j: int, in_stage: dict | None = None):
    """1 (pp == 1), the literal 'layer on stage j', or None when impossible. ``in_stage``
    (default: the pipeline's) is [pp][layer][stage]."""
    if pp == 1:
        return 1
    return (in_stage if in_stage is not None else ctx.timing.in_stage)[pp][layer][j]


def _stage_times(ctx: Context, pp: int, phase: int, in_stage: dict, moe_time: list):
    """(stage times, slowest stage): time[j] >= dense + MoE times of stage j's layers
    + embedding (first stage) / LM head (last stage), for the chosen configuration."""
    model, data = ctx.model, ctx.data
    every = list(range(data.num_layers))
    top = max(phase_of(config, phase).stage_ns(every, _full_loads(data), True, True) for config in data.cfgs)
    times = [model.new_int_var(0, top, f"stage_time[{phase},p={pp},j={j}]") for j in range(pp)]
    moe_top = max(phase_of(config, phase).moe_ns(LOAD_SCALE) for config in data.cfgs)
    moe_in_stage = []
    for j in range(pp):
        terms = []
        for i, layer in enumerate(data.moe_ids):
            here = on_stage(ctx, pp, layer, j, in_stage)
            if here is None:
                continue
            if isinstance(here, int):
                terms.append(moe_time[i])
                continue
            moe_if_here = model.new_int_var(0, moe_top, f"moe_on[{phase},p={pp},l={layer},j={j}]")
            model.add(moe_if_here >= moe_time[i]).only_enforce_if(here)
            terms.append(moe_if_here)
        moe_in_stage.append(sum(terms))
    for k in data.cfgs_with("pp", pp):
        costs = phase_of(data.cfgs[k], phase)
        for j in range(pp):
            dense = sum(costs.layer_dense_ns[layer] * here for layer in every
                        if (here := on_stage(ctx, pp, layer, j, in_stage)) is not None)
            extra = (costs.embed_ns if j == 0 else 0) + (costs.head_ns if j == pp - 1 else 0)
            model.add(times[j] >= dense + moe_in_stage[j] + extra).only_enforce_if(ctx.choice.config[k])
    slowest = model.new_int_var(0, top, f"slowest_stage[{phase},p={pp}]")
    for time in times:
        model.add(slowest >= time)
    return times, slowest


def _batch_top_ns(data: ModelData, phase: int) -> int:
    """Upper bound on one phase's batch time: every layer on one stage at full load, for
    m + p passes, plus p sends."""
    return max(phase_of(config, phase).stage_ns(range(data.num_layers), _full_loads(data), True, True)
               * (config.deg.micro_batches + config.deg.pp) + config.deg.pp * phase_of(config, phase).p2p_ns
               for config in data.cfgs)


def _timing(ctx: Context, stage_time: dict, slowest: dict):
    """(ttft, tpot, makespan) of the chosen configuration; tpot None without decode."""
    model, data, config_var = ctx.model, ctx.data, ctx.choice.config
    top = _batch_top_ns(data, PREFILL)
    ttft = model.new_int_var(0, top, "ttft_ns")
    for k, config in enumerate(data.cfgs):
        p, m = config.deg.pp, config.deg.micro_batches
        model.add(ttft >= sum(stage_time[PREFILL, p]) + (m - 1) * slowest[PREFILL, p]
                  + (p - 1) * config.prefill.p2p_ns).only_enforce_if(config_var[k])
    steps = data.inst.workload.output_tokens
    if not data.decoding:
        return ttft, None, ttft
    decode_top = _batch_top_ns(data, DECODE)
    tpot = model.new_int_var(0, decode_top, "tpot_ns")
    for k, config in enumerate(data.cfgs):
        p, m = config.deg.pp, config.deg.micro_batches
        model.add(tpot >= max(m, p) * slowest[DECODE, p]
                  + (p - 1) * config.decode.p2p_ns).only_enforce_if(config_var[k])
    makespan = model.new_int_var(0, top + steps * decode_top, "makespan_ns")
    model.add(makespan == ttft + steps * tpot)
    return ttft, tpot, makespan


def build(ctx: Context) -> Timing:
    """Layer times per phase, stage assignment and times per PP degree, batch timing."""
    data = ctx.data
    phases = [PREFILL, DECODE] if data.decoding else [PREFILL]
    moe_time = {phase: _moe_times(ctx, phase) for phase in phases}
    in_stage, stage_time, slowest = {}, {}, {}
    for pp in data.values_of("pp"):
        in_stage[pp] = _stage_assignment(ctx, pp)
        for phase in phases:
            stage_time[phase, pp], slowest[phase, pp] = _stage_times(ctx, pp, phase, in_stage, moe_time[phase])
    ttft, tpot, makespan = _timing(ctx, stage_time, slowest)
    return Timing(in_stage, moe_time, stage_time, slowest, ttft, tpot, makespan)


def extract_stages(ctx: Context, solver, pp: int) -> tuple[tuple[int, ...], ...]:
    """Layers of each stage for the solved assignment of PP degree ``pp``."""
    n, in_stage = ctx.data.num_layers, ctx.timing.in_stage
    if pp == 1:
        return (tuple(range(n)),)
    return tuple(tuple(l for l in range(n) if in_stage[pp][l][j] is not None
                       and solver.boolean_value(in_stage[pp][l][j])) for j in range(pp))
