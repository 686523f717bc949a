"""Latency: TTFT strictly below its target; one decode step (TPOT) at most its target."""

from optimizer.cpsat.context import Context


def build(ctx: Context) -> None:
    """ttft <= TTFT limit (already strict in ns) and tpot <= TPOT limit, each under its
    requirement literal."""
    if "ttft" in ctx.limits_ns:
        ctx.model.add(ctx.ttft <= ctx.limits_ns["ttft"]).only_enforce_if(ctx.req["ttft"])
    if "tpot" in ctx.limits_ns and ctx.tpot is not None:
        ctx.model.add(ctx.tpot <= ctx.limits_ns["tpot"]).only_enforce_if(ctx.req["tpot"])
