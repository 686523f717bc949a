"""``moeopt size INSTANCE --rate R``: the fewest GPUs serving R requests/s within the SLOs,
aggregated and disaggregated (``optimizer/search/size.py``, ``optimizer/cpsat/disagg_size.py``)."""

from __future__ import annotations

import sys

import click

from optimizer.cli.common import FORMAT, VERBOSE, FiniteFloatRange, dump, load_instance, run
from optimizer.errors import InputError

MAX_RATES = 1000


def parse_rates(rate: float | None, rate_range: str | None) -> list[float]:
    """The rates asked: ``--rate R`` or ``--rate-range A:B:STEP`` (A, A+STEP, ... <= B)."""
    if (rate is None) == (rate_range is None):
        raise InputError("--rate/--rate-range: give exactly one of them")
    if rate is not None:
        return [rate]
    parts = rate_range.split(":")
    try:
        low, high, step = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"--rate-range={rate_range[:60]!r}: must be A:B:STEP, three numbers") from None
    if not (0 < low <= high and step > 0) or any(x != x or x in (float("inf"),) for x in (low, high, step)):
        raise InputError(f"--rate-range={rate_range[:60]!r}: needs 0 < A <= B and STEP > 0, all finite")
    count = int((high - low) / step + 1e-9) + 1
    if count > MAX_RATES:
        raise InputError(f"--rate-range={rate_range[:60]!r}: {count} rates, at most {MAX_RATES}")
    return [round(low + i * step, 12) for i in range(count)]


def parse_allowed(text: str | None, gpus_per_node: int, max_gpus: int) -> list[int]:
    """``--gpus-allowed`` (comma-separated counts or ranges A-B), else the multiples of the
    node size up to ``max_gpus``."""
    if text is None:
        out = list(range(gpus_per_node, max_gpus + 1, gpus_per_node))
        if not out:
            raise InputError(f"--max-gpus={max_gpus}: below one node of {gpus_per_node} GPUs; "
                             "give --gpus-allowed for smaller counts")
        return out
    out: set[int] = set()
    for token in text.split(","):
        low, _, high = token.strip().partition("-")
        try:
            a, b = int(low), int(high or low)
        except ValueError:
            raise InputError(f"--gpus-allowed={text[:60]!r}: {token.strip()[:20]!r} is not a count "
                             "or a range A-B") from None
        if not 1 <= a <= b <= 65536:
            raise InputError(f"--gpus-allowed={text[:60]!r}: {token.strip()[:20]!r}: counts lie in 1..65536")
        out.update(range(a, b + 1))
    return sorted(out)


@click.command(name="size", help="The fewest GPUs serving a request rate within the SLOs, aggregated and "
                                 "disaggregated; exit 3 when no allowed count serves it (proven), "
                                 "4 when the time limit left it open.")
@click.argument("instance", type=click.Path(dir_okay=True))
@click.option("--rate", type=FiniteFloatRange(min=0, min_open=True), default=None, help="requests/s")
@click.option("--rate-range", "rate_range", default=None, metavar="A:B:STEP", help="a table over rates")
@click.option("--gpus-allowed", "gpus_allowed", default=None, metavar="LIST",
              help="GPU counts allowed, e.g. 8,12,16 or 1-64 (default: multiples of the node size up to --max-gpus)")
@click.option("--max-gpus", "max_gpus", type=click.IntRange(1, 65536), default=512, show_default=True,
              help="largest count tried when --gpus-allowed is not given")
@click.option("--max-replica-gpus", "max_replica_gpus", type=click.IntRange(1, 65536), default=None,
              help="largest replica of a disaggregated pool (default: 4 nodes)")
@click.option("--mode", type=click.Choice(["agg", "disagg", "both"]), default="both", show_default=True)
@FORMAT
@click.option("--time-limit", type=FiniteFloatRange(0.05, 86400), default=None,
              help="seconds for the whole command (default: search.time_limit_s)")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="CP-SAT workers")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None, help="CP-SAT random seed")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="where to compute: here, or one Ray task per rate (the sweep's Ray backend)")
@click.option("--address", default=None, help="Ray cluster address (with --backend ray)")
@VERBOSE
def size(instance, rate, rate_range, gpus_allowed, max_gpus, max_replica_gpus, mode, format_, time_limit,
         workers, seed, backend, address, verbose):
    def body():
        from optimizer.search.size import size_rows
        if backend != "ray" and address:
            raise InputError(f"--address={address}: only with --backend ray")
        inst = load_instance(instance)
        if inst.workload.kind != "service":
            raise InputError("workload.kind='batch': moeopt size sizes services (workload.kind 'service')")
        rates = parse_rates(rate, rate_range)
        allowed = parse_allowed(gpus_allowed, inst.hardware.gpus_per_node, max_gpus)
        args = (inst, instance, rates, allowed, max_replica_gpus, mode,
                time_limit if time_limit is not None else inst.search.time_limit_s,
                workers or inst.search.workers, inst.search.seed if seed is None else seed)
        if backend == "ray":
            from optimizer.search.size_ray import size_on_ray
            results = size_on_ray(*args, address)
        else:
            results = size_rows(*args)
        if format_ == "json":
            click.echo(dump(results[0] if rate is not None else results), nl=False)
        else:
            click.echo(size_table(results), nl=False)
        modes = [m for m in ("agg", "disagg") if mode in (m, "both")]
        unserved = [r for r in results if all(r[m]["num_gpus"] is None for m in modes)]
        if unserved:
            first = unserved[0]
            if all(first[m]["status"] == "infeasible" for m in modes):
                click.echo(f"moeopt: infeasible: {first['rate_rps']:g} requests/s: {first['why_not']}", err=True)
                sys.exit(3)
            click.echo(f"moeopt: time limit: {first['rate_rps']:g} requests/s: no mode found a GPU count "
                       "serving it in time (raise --time-limit)", err=True)
            sys.exit(4)
    run(verbose, body)


def size_table(results: list[dict]) -> str:
    """One row per rate: per mode the fewest GPUs, their status and the deployment's shape."""
    lines = [f"{'rate (req/s)':>12}  {'agg GPUs':>9}  {'status':<10} {'agg plan':<34} "
             f"{'disagg GPUs':>11}  {'status':<10} disagg plan"]
    for r in results:
        cells = []
        for mode in ("agg", "disagg"):
            e = r.get(mode) or {"num_gpus": None, "status": "-"}
            status = e["status"] if e["status"] != "feasible" else f"gap {e.get('gap', 0):.0%}"
            cells.append(("-" if e["num_gpus"] is None else str(e["num_gpus"]), status, e.get("shape", "")))
        (an, ast_, ash), (dn, dst, dsh) = cells
        lines.append(f"{r['rate_rps']:>12g}  {an:>9}  {ast_:<10} {ash[:34]:<34} {dn:>11}  {dst:<10} {dsh}")
    return "\n".join(lines) + "\n"


command = size
