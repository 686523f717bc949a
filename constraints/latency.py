"""TTFT: the batch's prefill makespan stays strictly below the target."""

from optimizer.context import Context


def build(ctx: Context) -> None:
    """makespan <= TTFT limit (already made strict in ns), under the 'ttft' literal."""
    if "ttft" in ctx.limits_ns:
        ctx.model.add(ctx.makespan <= ctx.limits_ns["ttft"]).only_enforce_if(ctx.req["ttft"])
