"""Parallel degrees: exactly one admissible configuration is chosen.

The table of configurations (``optimizer.costs.candidates``) already satisfies
tp*pp*dp == etp*ep*edp*pp == GPUs, TP inside a node, EP dividing the experts; selecting
one row replaces every product of degrees.
"""

from optimizer.cpsat.context import DEGREES, Choice, Context

NEEDS: tuple[str, ...] = ()
PROVIDES = DEGREES


def build(ctx: Context) -> Choice:
    """One Boolean per configuration; exactly one is true. A configuration that a
    requirement rules out by a lower bound (``data.blocked``) may be chosen only if that
    requirement is off."""
    model = ctx.model
    config = [model.new_bool_var(f"cfg[{k}]") for k in range(len(ctx.data.cfgs))]
    blocked = []
    for k, (_, reasons) in enumerate(ctx.data.blocked):
        chosen = model.new_bool_var(f"blocked[{k}]")
        model.add_bool_or([chosen.Not()] + [ctx.requirement[name].Not() for name in reasons])
        blocked.append(chosen)
    model.add_exactly_one(config + blocked)
    return Choice(config)
