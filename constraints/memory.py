"""Memory: every GPU of every stage fits weights, KV cache, activations and buffers."""

from constraints.pipeline import on_stage
from optimizer.cpsat.context import DEGREES, PIPELINE, Context

NEEDS = (DEGREES, PIPELINE)
PROVIDES = None


def build(ctx: Context) -> None:
    """For the chosen configuration, each stage's per-GPU bytes <= the memory limit
    (weights and KV per layer: dense, MoE and sliding-window layers differ)."""
    model, cap_bytes, data = ctx.model, ctx.data.memory_cap_bytes, ctx.data
    for k, config in enumerate(data.cfgs):
        pp, parts = config.deg.pp, config.memory
        for j in range(pp):
            fixed_bytes = (parts.activations + parts.buffers + (parts.embedding if j == 0 else 0)
                           + (parts.head if j == pp - 1 else 0))
            if pp == 1:
                if fixed_bytes + sum(parts.layer_weights) + sum(parts.layer_kv) > cap_bytes:
                    model.add_bool_or([ctx.choice.config[k].Not(), ctx.requirement["memory"].Not()])
                continue
            held_bytes = sum((parts.layer_weights[layer] + parts.layer_kv[layer]) * here
                             for layer in range(data.num_layers)
                             if (here := on_stage(ctx, pp, layer, j)) is not None)
            model.add(fixed_bytes + held_bytes <= cap_bytes).only_enforce_if(ctx.enforce(k, "memory"))
