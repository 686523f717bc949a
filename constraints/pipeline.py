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

from optimizer.cpsat.context import Context
from optimizer.costs.units import LOAD_SCALE

PREFILL, DECODE = 0, 1


def phase_of(c, phase: int):
    return c.prefill if phase == PREFILL else c.decode


def _moe_times(ctx: Context, phase: int) -> None:
    """moe_time[phase][i] >= hot-rank MoE time of MoE layer i for the chosen configuration."""
    model = ctx.model
    top = max(phase_of(c, phase).moe_ns(LOAD_SCALE) for c in ctx.cfgs)
    times = [model.new_int_var(0, top, f"moe_time[{phase},{l}]") for l in ctx.moe_ids]
    for k, c in enumerate(ctx.cfgs):
        ph = phase_of(c, phase)
        comm, alpha = ph.moe_comm_full_ns, ph.moe_latency_ns
        for i, hot in enumerate(ctx.hot[c.deg.ep]):
            t = times[i]
            if isinstance(hot, int):
                model.add(t >= ph.moe_ns(hot)).only_enforce_if(ctx.cfg[k])
                continue
            model.add(LOAD_SCALE * t >= (ph.moe_compute_full_ns + comm) * hot
                      + LOAD_SCALE * alpha).only_enforce_if(ctx.cfg[k])
            model.add(LOAD_SCALE * t >= LOAD_SCALE * (ph.moe_weights_ns + alpha)
                      + (ph.moe_act_full_ns + comm) * hot).only_enforce_if(ctx.cfg[k])
    ctx.moe_time[phase] = times


def _stage_assignment(ctx: Context, p: int) -> None:
    """in_stage[p][l][j] with contiguity (None where a layer cannot sit)."""
    model, n = ctx.model, ctx.num_layers
    if p == 1:
        ctx.in_stage[p] = [[None] for _ in range(n)]
        return
    grid: list[list] = []
    stage_of = []
    for l in range(n):
        # Layer l can only sit on stages max(0, l-(n-p)) .. min(l, p-1) (stages non-empty).
        row = [model.new_bool_var(f"in_stage[p={p},l={l},j={j}]")
               if max(0, l - (n - p)) <= j <= min(l, p - 1) else None for j in range(p)]
        model.add_exactly_one(v for v in row if v is not None)
        grid.append(row)
        stage_of.append(sum(j * v for j, v in enumerate(row) if v is not None))
    for l in range(n - 1):
        model.add(stage_of[l] <= stage_of[l + 1])
        model.add(stage_of[l + 1] <= stage_of[l] + 1)
    model.add(stage_of[0] == 0)
    model.add(stage_of[n - 1] == p - 1)
    ctx.in_stage[p] = grid


def on_stage(ctx: Context, p: int, layer: int, j: int):
    """1 (p == 1), the literal 'layer on stage j', or None when impossible."""
    return 1 if p == 1 else ctx.in_stage[p][layer][j]  # int 1, a literal, or None


def _stage_times(ctx: Context, p: int, phase: int) -> None:
    """stage_time[phase, p][j] >= dense + MoE times of its layers + embedding / head."""
    model, n = ctx.model, ctx.num_layers
    every = list(range(n))
    hot_full = {l: LOAD_SCALE for l in ctx.moe_ids}
    top = max(phase_of(c, phase).stage_ns(every, hot_full, True, True) for c in ctx.cfgs)
    times = [model.new_int_var(0, top, f"stage_time[{phase},p={p},j={j}]") for j in range(p)]
    moe_top = max(phase_of(c, phase).moe_ns(LOAD_SCALE) for c in ctx.cfgs)
    moe_in_stage = []
    for j in range(p):
        terms = []
        for i, l in enumerate(ctx.moe_ids):
            lit = on_stage(ctx, p, l, j)
            if lit is None:
                continue
            if isinstance(lit, int):
                terms.append(ctx.moe_time[phase][i])
                continue
            z = model.new_int_var(0, moe_top, f"moe_on[{phase},p={p},l={l},j={j}]")
            model.add(z >= ctx.moe_time[phase][i]).only_enforce_if(lit)
            terms.append(z)
        moe_in_stage.append(sum(terms))
    for k in ctx.cfgs_with("pp", p):
        ph = phase_of(ctx.cfgs[k], phase)
        for j in range(p):
            dense = sum(ph.layer_dense_ns[l] * lit for l in every
                        if (lit := on_stage(ctx, p, l, j)) is not None)
            extra = (ph.embed_ns if j == 0 else 0) + (ph.head_ns if j == p - 1 else 0)
            model.add(times[j] >= dense + moe_in_stage[j] + extra).only_enforce_if(ctx.cfg[k])
    slowest = model.new_int_var(0, top, f"slowest_stage[{phase},p={p}]")
    for t in times:
        model.add(slowest >= t)
    ctx.stage_time[phase, p] = times
    ctx.slowest[phase, p] = slowest


def _timing(ctx: Context) -> None:
    """TTFT, TPOT and batch makespan of the chosen configuration."""
    model = ctx.model
    top = max(c.prefill.stage_ns(range(ctx.num_layers), {l: LOAD_SCALE for l in ctx.moe_ids}, True, True)
              * (c.deg.micro_batches + c.deg.pp) + c.deg.pp * c.prefill.p2p_ns for c in ctx.cfgs)
    ctx.ttft = model.new_int_var(0, top, "ttft_ns")
    for k, c in enumerate(ctx.cfgs):
        p, m = c.deg.pp, c.deg.micro_batches
        model.add(ctx.ttft >= sum(ctx.stage_time[PREFILL, p]) + (m - 1) * ctx.slowest[PREFILL, p]
                  + (p - 1) * c.prefill.p2p_ns).only_enforce_if(ctx.cfg[k])
    steps = ctx.inst.workload.output_tokens
    if not ctx.decoding:
        ctx.tpot = None
        ctx.makespan = ctx.ttft
        return
    dtop = max(c.decode.stage_ns(range(ctx.num_layers), {l: LOAD_SCALE for l in ctx.moe_ids}, True, True)
               * (c.deg.micro_batches + c.deg.pp) + c.deg.pp * c.decode.p2p_ns for c in ctx.cfgs)
    ctx.tpot = model.new_int_var(0, dtop, "tpot_ns")
    for k, c in enumerate(ctx.cfgs):
        p, m = c.deg.pp, c.deg.micro_batches
        model.add(ctx.tpot >= max(m, p) * ctx.slowest[DECODE, p]
                  + (p - 1) * c.decode.p2p_ns).only_enforce_if(ctx.cfg[k])
    ctx.makespan = model.new_int_var(0, top + steps * dtop, "makespan_ns")
    model.add(ctx.makespan == ctx.ttft + steps * ctx.tpot)


def build(ctx: Context) -> None:
    """Layer times per phase, stage assignment and times per PP degree, batch timing."""
    phases = [PREFILL, DECODE] if ctx.decoding else [PREFILL]
    for phase in phases:
        _moe_times(ctx, phase)
    for p in ctx.values_of("pp"):
        _stage_assignment(ctx, p)
        for phase in phases:
            _stage_times(ctx, p, phase)
    _timing(ctx)


def extract_stages(ctx: Context, solver, p: int) -> tuple[tuple[int, ...], ...]:
    """Layers of each stage for the solved assignment of PP degree ``p``."""
    if p == 1:
        return (tuple(range(ctx.num_layers)),)
    return tuple(tuple(l for l in range(ctx.num_layers) if ctx.in_stage[p][l][j] is not None
                       and solver.boolean_value(ctx.in_stage[p][l][j])) for j in range(p))
