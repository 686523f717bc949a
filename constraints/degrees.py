"""Parallel degrees: exactly one admissible configuration is chosen.

The table of configurations (``optimizer.costs.candidates``) already satisfies
tp*pp*dp == etp*ep*edp*pp == GPUs, TP inside a node, EP dividing the experts; selecting
one row replaces every product of degrees.
"""

from optimizer.cpsat.context import Context


def build(ctx: Context) -> None:
    """One Boolean per configuration; exactly one is true. A configuration that a
    requirement rules out by a lower bound may be chosen only if that requirement is off."""
    model = ctx.model
    ctx.cfg = [model.new_bool_var(f"cfg[{k}]") for k in range(len(ctx.cfgs))]
    blocked = []
    for k, (deg, reasons) in enumerate(ctx.blocked):
        lit = model.new_bool_var(f"blocked[{k}]")
        model.add_bool_or([lit.Not()] + [ctx.req[r].Not() for r in reasons])
        blocked.append(lit)
    model.add_exactly_one(ctx.cfg + blocked)
