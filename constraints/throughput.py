"""Throughput: tokens of the batch (prompt + generated) / batch makespan >= target."""

from optimizer.cpsat.context import Context


def build(ctx: Context) -> None:
    """makespan <= tokens / target (per GPU targets scaled by the GPU count)."""
    if "throughput" in ctx.limits_ns:
        ctx.model.add(ctx.makespan <= ctx.limits_ns["throughput"]).only_enforce_if(
            ctx.req["throughput"])
