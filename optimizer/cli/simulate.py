"""``moeopt simulate INSTANCE PLAN``: a discrete-event simulation of the plan serving the
instance's workload (see docs/simulator.md)."""

from __future__ import annotations

import click

from optimizer.cli.common import FORMAT, VERBOSE, FiniteFloatRange, dump, run

HELP = ("Simulate PLAN serving INSTANCE's workload request by request (continuous batching, "
        "chunked prefill, FCFS, recompute preemption) and report latency percentiles, goodput "
        "and KV use. A disaggregated plan (pools) runs a prefill pool, the KV transfer and a "
        "decode pool, and adds per-pool utilisation and KV peaks. A service instance sends "
        "--requests requests (Poisson at its rate, a closed loop, or its trace); a batch "
        "instance sends its batch at time 0. Knobs the plan lacks come from the options. "
        "Writes JSON and a PNG of latency against time (--output, default "
        "results/<name>/simulate.json).")


@click.command(name="simulate", help=HELP)
@click.argument("instance", type=click.Path(dir_okay=True))
@click.argument("plan", type=click.Path(dir_okay=True))
@click.option("--requests", type=click.IntRange(1, 10**7), default=10_000, show_default=True,
              help="requests of a service workload (a trace gives at most its rows)")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="seed of arrivals and lengths")
@click.option("--repeats", type=click.IntRange(1, 100), default=1, show_default=True,
              help="run seeds SEED .. SEED+REPEATS-1; the first is summarised, all are listed")
@click.option("--warmup-fraction", type=FiniteFloatRange(0.0, 0.9), default=0.1, show_default=True,
              help="first requests (by arrival) left out of the figures")
@click.option("--routing", type=click.Choice(["least-loaded", "round-robin"]), default="least-loaded",
              show_default=True, help="how requests are sent to the attention-DP replicas")
@click.option("--max-running-requests", type=click.IntRange(1, 10**7), default=None,
              help="running-request cap per replica when the plan has none [default: 256]")
@click.option("--prefill-chunk-tokens", type=click.IntRange(1, 10**7), default=None,
              help="token budget of one step per replica when the plan has none [default: 2048]")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="JSON file to write (the PNG goes beside it)")
@FORMAT
@VERBOSE
def simulate(instance, plan, requests, seed, repeats, warmup_fraction, routing,
             max_running_requests, prefill_chunk_tokens, output, format_, verbose):
    def body():
        from optimizer.inputs.files import write_atomic
        from optimizer.simulate.run import Settings, output_paths
        from optimizer.simulate.run import run as simulate_run
        from optimizer.simulate.summary import plot_png, table
        settings = Settings(requests, seed, repeats, warmup_fraction, routing,
                            max_running_requests, prefill_chunk_tokens)
        summary, out, dep = simulate_run(instance, plan, settings)
        json_path, png_path = output_paths(dep.instance, output)
        title = f"{dep.instance.name}: {_shape(dep)}, seed {seed}"
        png = plot_png(out, warmup_fraction if dep.instance.workload.kind == "service" else 0.0, title)
        write_atomic(json_path, dump(summary), "--output")
        write_atomic(png_path, png, "--output")
        click.echo(dump(summary) if format_ == "json" else
                   table(summary, f"simulation of {title}") + f"wrote {json_path} and {png_path}\n",
                   nl=False)
    run(verbose, body)


def _shape(dep) -> str:
    """'8 replica(s)', or the queues of a disaggregated plan's pools: '2 prefill + 3 decode queues'."""
    pools = getattr(dep, "pools", None)
    if pools is None:
        return f"{dep.replicas} replica(s)"
    return " + ".join(f"{p.replicas} {p.role}" for p in pools) + f" queues on {dep.num_gpus} GPUs"


command = simulate
