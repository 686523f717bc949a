"""Latency: time to first token (TTFT) under its limit and one decode step (TPOT) at most its target."""

from optimizer.cpsat.context import PIPELINE, Context

NEEDS = (PIPELINE,)
PROVIDES = None


def build(ctx: Context) -> None:
    """ttft <= TTFT limit (already strict in ns) and tpot <= TPOT limit, each under its
    requirement literal."""
    limits, timing = ctx.data.limits_ns, ctx.timing
    if "ttft" in limits:
        ctx.model.add(timing.ttft <= limits["ttft"]).only_enforce_if(ctx.requirement["ttft"])
    if "tpot" in limits and timing.tpot is not None:
        ctx.model.add(timing.tpot <= limits["tpot"]).only_enforce_if(ctx.requirement["tpot"])
