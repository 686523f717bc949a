"""Throughput: tokens of the batch (prompt + generated) / batch makespan >= target."""

from optimizer.cpsat.context import PIPELINE, Context

NEEDS = (PIPELINE,)
PROVIDES = None


def build(ctx: Context) -> None:
    """makespan <= tokens / target (per GPU targets scaled by the GPU count)."""
    if "throughput" in ctx.data.limits_ns:
        ctx.model.add(ctx.timing.makespan <= ctx.data.limits_ns["throughput"]).only_enforce_if(
            ctx.requirement["throughput"])
