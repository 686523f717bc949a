"""Memory: every GPU of every stage fits weights, KV cache, activations and buffers."""

from optimizer.context import Context


def build(ctx: Context) -> None:
    """For the chosen configuration, each stage's per-GPU bytes <= the memory limit."""
    model, cap = ctx.model, ctx.memory_cap_bytes
    for k, c in enumerate(ctx.cfgs):
        p, mp = c.deg.pp, c.memory
        per_layer = mp.layer_weights + mp.layer_kv
        for j, n_layers in enumerate(ctx.layers_in_stage[p]):
            fixed = (mp.activations + mp.buffers + (mp.embedding if j == 0 else 0)
                     + (mp.head if j == p - 1 else 0))
            if isinstance(n_layers, int):
                if fixed + per_layer * n_layers > cap:
                    model.add_bool_or([ctx.cfg[k].Not(), ctx.req["memory"].Not()])
                continue
            model.add(fixed + per_layer * n_layers <= cap).only_enforce_if(
                ctx.enforce(k, "memory"))
