"""Memory: every GPU of every stage fits weights, KV cache, activations and buffers."""

from constraints.pipeline import on_stage
from optimizer.cpsat.context import Context


def build(ctx: Context) -> None:
    """For the chosen configuration, each stage's per-GPU bytes <= the memory limit
    (weights and KV per layer: dense, MoE and sliding-window layers differ)."""
    model, cap, n = ctx.model, ctx.memory_cap_bytes, ctx.num_layers
    for k, c in enumerate(ctx.cfgs):
        p, mp = c.deg.pp, c.memory
        for j in range(p):
            fixed = (mp.activations + mp.buffers + (mp.embedding if j == 0 else 0)
                     + (mp.head if j == p - 1 else 0))
            if p == 1:
                if fixed + sum(mp.layer_weights) + sum(mp.layer_kv) > cap:
                    model.add_bool_or([ctx.cfg[k].Not(), ctx.req["memory"].Not()])
                continue
            held = sum((mp.layer_weights[l] + mp.layer_kv[l]) * lit for l in range(n)
                       if (lit := on_stage(ctx, p, l, j)) is not None)
            model.add(fixed + held <= cap).only_enforce_if(ctx.enforce(k, "memory"))
