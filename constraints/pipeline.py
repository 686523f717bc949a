"""Pipeline: layer times, contiguous layer-to-stage assignment, stage times, makespan.

- ``moe_time[l]`` >= the hot-rank MoE time of layer l under the chosen configuration
  (two linear roofline pieces, see ``tables.StageCosts.moe_ns``);
- per candidate PP degree p, ``in_stage[p][l][j]``: layer l on stage j; stages are
  contiguous and non-empty (stage index non-decreasing by steps of 0 or 1, first layer on
  stage 0, last on stage p-1);
- stage time per micro-batch >= dense layers + their MoE times + embedding (first stage)
  + LM head (last stage);
- makespan >= sum_j t_j + (m-1) max_j t_j + (p-1) t_p2p.
Every bound is a lower bound that the solver may meet with equality; requirements put
upper limits on the makespan, and the lexicographic second objective minimizes it.
"""

from __future__ import annotations

from optimizer.context import Context
from optimizer.evaluate import makespan_ns
from optimizer.units import LOAD_SCALE


def _moe_times(ctx: Context) -> None:
    """moe_time[l] >= hot-rank MoE time of layer l for the chosen configuration."""
    model = ctx.model
    top = max(c.moe_ns(LOAD_SCALE) for c in ctx.cfgs)
    ctx.moe_time = [model.new_int_var(0, top, f"moe_time[{l}]") for l in range(ctx.num_layers)]
    for k, c in enumerate(ctx.cfgs):
        comm, alpha = c.moe_comm_full_ns, c.moe_latency_ns
        for l, hot in enumerate(ctx.hot[c.deg.ep]):
            t = ctx.moe_time[l]
            if isinstance(hot, int):
                model.add(t >= c.moe_ns(hot)).only_enforce_if(ctx.cfg[k])
                continue
            model.add(LOAD_SCALE * t >= (c.moe_compute_full_ns + comm) * hot
                      + LOAD_SCALE * alpha).only_enforce_if(ctx.cfg[k])
            model.add(LOAD_SCALE * t >= LOAD_SCALE * (c.moe_weights_ns + alpha)
                      + (c.moe_act_full_ns + comm) * hot).only_enforce_if(ctx.cfg[k])


def _stage_assignment(ctx: Context, p: int) -> None:
    """in_stage[p][l][j] with contiguity; layers_in_stage[p][j] as linear expressions."""
    model, n = ctx.model, ctx.num_layers
    if p == 1:
        ctx.in_stage[p] = [[None] for _ in range(n)]
        ctx.layers_in_stage[p] = [n]
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
    ctx.layers_in_stage[p] = [sum(grid[l][j] for l in range(n) if grid[l][j] is not None)
                              for j in range(p)]


def _stage_times(ctx: Context, p: int) -> None:
    """stage_time[p][j] >= dense + MoE times of its layers + embedding / head."""
    model, n = ctx.model, ctx.num_layers
    top = max(c.stage_ns([LOAD_SCALE] * n, True, True) for c in ctx.cfgs)
    moe_top = max(c.moe_ns(LOAD_SCALE) for c in ctx.cfgs)
    times = [model.new_int_var(0, top, f"stage_time[p={p},j={j}]") for j in range(p)]
    moe_in_stage = []
    for j in range(p):
        if p == 1:
            moe_in_stage.append(sum(ctx.moe_time))
            continue
        terms = []
        for l in range(n):
            if ctx.in_stage[p][l][j] is None:
                continue
            z = model.new_int_var(0, moe_top, f"moe_on[p={p},l={l},j={j}]")
            model.add(z >= ctx.moe_time[l]).only_enforce_if(ctx.in_stage[p][l][j])
            terms.append(z)
        moe_in_stage.append(sum(terms))
    for k in ctx.cfgs_with("pp", p):
        c = ctx.cfgs[k]
        for j in range(p):
            extra = (c.embed_ns if j == 0 else 0) + (c.head_ns if j == p - 1 else 0)
            model.add(times[j] >= c.layer_dense_ns * ctx.layers_in_stage[p][j]
                      + moe_in_stage[j] + extra).only_enforce_if(ctx.cfg[k])
    ctx.stage_time[p] = times


def _makespan(ctx: Context) -> None:
    """makespan >= the pipeline fill/drain formula of the chosen configuration."""
    model = ctx.model
    top = max(makespan_ns([c.stage_ns([LOAD_SCALE] * ctx.num_layers, True, True)] * c.deg.pp,
                          c.deg.micro_batches, c.p2p_ns) for c in ctx.cfgs)
    ctx.makespan = model.new_int_var(0, top, "makespan_ns")
    slowest = {}
    for p, times in ctx.stage_time.items():
        slowest[p] = model.new_int_var(0, top, f"slowest_stage[p={p}]")
        for t in times:
            model.add(slowest[p] >= t)
    for k, c in enumerate(ctx.cfgs):
        p, m = c.deg.pp, c.deg.micro_batches
        model.add(ctx.makespan >= sum(ctx.stage_time[p]) + (m - 1) * slowest[p]
                  + (p - 1) * c.p2p_ns).only_enforce_if(ctx.cfg[k])


def build(ctx: Context) -> None:
    """Layer times, stage assignment and times per PP degree, and the makespan."""
    _moe_times(ctx)
    for p in ctx.values_of("pp"):
        _stage_assignment(ctx, p)
        _stage_times(ctx, p)
    _makespan(ctx)


def extract_stages(ctx: Context, solver, p: int) -> tuple[tuple[int, ...], ...]:
    """Layers of each stage for the solved assignment of PP degree ``p``."""
    if p == 1:
        return (tuple(range(ctx.num_layers)),)
    return tuple(tuple(l for l in range(ctx.num_layers) if ctx.in_stage[p][l][j] is not None
                       and solver.boolean_value(ctx.in_stage[p][l][j])) for j in range(p))
