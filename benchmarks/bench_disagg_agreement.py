"""Agreement of a disaggregated plan's predictions with the discrete-event simulator.

Given a disaggregated plan file (``moeopt solve --mode disagg``) and its instance, prints per
figure the plan's prediction (its top-level ``metrics``), the simulation's (median of 3 seeds)
and the ratio predicted / simulated, against the targets of issue 14 (p90 TTFT within 15 %,
p90 TPOT within 5 %, rate within 10 %, judged at utilisation <= 85 %).

Steady state: the simulated latencies and SLO attainment are taken over the requests that
arrive between the 25 % and the 75 % quantile of the arrival times (the ramp-up, while the
decode pool fills, and the drain after the last arrival, when it empties, are left out: a
request of 1,000 output tokens lives ~20 s, so a short run is mostly ramp and drain). Use
enough requests that a quarter of the run outlasts a request's life (default 4,000).

- at the plan's rate (``metrics.rate_rps``, else the instance's ``arrival_rate_rps``): TTFT and
  TPOT at the instance's percentile (50, 90 or 99), the SLO attainment, each pool's simulated
  utilisation and KV peak, the mean transfer time;
- sustainable rate: the simulated completion rate while offered 1.5x the plan's
  ``sustainable_rps`` (else its goodput), from the arrival at 50 % to the last arrival;
- goodput (DistServe's: the highest rate at which the percentile's share of requests meets
  every SLO, in steady state): the planner's ``goodput_rps`` against the simulated one, found
  by bisection on the rate (the median steady attainment of 3 seeds against the percentile),
  capped by the simulated sustainable rate: beyond it the backlog grows without bound, though
  a finite run of an overloaded decode pool can still meet a TPOT SLO (the wait for a slot
  spread over 1,000 tokens). ``backlog growth`` at the plan's rate (requests in the system
  gained from the 50 % to the 75 % arrival quantile, per arrival) says whether it keeps up.

TTFT is also read over a long run of the prefill pool alone (``--prefill-requests``, default
40,000, same seeds and steady window): the requests keep their arrival times and prompts but
get one output token, so each leaves at the end of its transfer. The simulator's prefill pool
never waits on the decode pool (a transfer is a pure delay, the prefill queue frees its slot
when it ends), so every request's TTFT is the same as in the full run
(tests/simulate/test_disagg.py checks it); the 2,000 steady arrivals of a 4,000-request run
are too few for a p90 that sits where rare, clustered "every queue busy" episodes decide it
(DeepSeek-V3 on 16 prefill queues: 0.718 s at 4,000 requests, 0.758 s at 200,000).

A figure the plan does not state is printed as '-' (a hand-written plan has no metrics).

    python -m benchmarks.bench_disagg_agreement INSTANCE PLAN [--requests 4000] [--prefill-requests 40000] [--no-goodput]
    python -m benchmarks.bench_disagg_agreement INSTANCE --from-agg AGG_PLAN --pools 1:1 --write P.json

``--from-agg`` writes (to ``--write``) a disaggregated plan whose prefill and decode pools are
copies of the aggregated service plan's replica (``--pools X:Y`` replicas each), without
metrics, then simulates it: a way to try the harness before the planner writes plans.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from optimizer.inputs.schema import Instance
from optimizer.inputs.service import Requests, load_trace, make_requests
from optimizer.simulate.engine import simulate_disagg
from optimizer.simulate.run import Settings, prepare, run
from optimizer.simulate.summary import latencies_s, meets_slo

SEEDS = 3
TARGETS = {"ttft": 0.15, "tpot": 0.05, "rate": 0.10}
MAX_UTILIZATION = 0.85
REPLICA_KEYS = ("degrees", "serving", "stages", "expert_placement", "gpus", "num_experts",
                "micro_batches", "redundant_experts")


def disagg_from_agg(agg: dict, prefill_replicas: int, decode_replicas: int) -> dict:
    """A disaggregated plan whose pools are copies of the aggregated plan's replica."""
    replica = {k: copy.deepcopy(agg[k]) for k in REPLICA_KEYS if k in agg}
    g = agg["num_gpus"]
    return {"schema_version": agg.get("schema_version", 1), "instance": agg.get("instance"),
            "status": "feasible", "mode": "disagg", "num_gpus": (prefill_replicas + decode_replicas) * g,
            "pools": [{"role": "prefill", "replicas": prefill_replicas, "num_gpus": g, **replica},
                      {"role": "decode", "replicas": decode_replicas, "num_gpus": g, **copy.deepcopy(replica)}]}


def instance_at(doc: dict, rate: float, workdir: Path) -> Path:
    doc = json.loads(json.dumps(doc))
    doc["workload"]["arrival_rate_rps"] = rate
    doc["workload"].pop("concurrency", None)
    path = workdir / f"inst_{rate:.9g}.json"
    path.write_text(json.dumps(doc))
    return path


def simulate_at(doc: dict, plan: Path, rate: float, requests: int, workdir: Path) -> list[tuple]:
    """(summary, outcome, steady figures) of each seed at ``rate`` requests/s."""
    path = instance_at(doc, rate, workdir)
    req = Instance.model_validate(doc).requirements
    runs = [run(str(path), str(plan), Settings(requests=requests, seed=s))[:2] for s in range(SEEDS)]
    return [(summary, out, steady(out, req)) for summary, out in runs]


def steady(out, req) -> dict:
    """TTFT / TPOT percentiles (the simulator's definitions) and SLO attainment over the
    requests arriving between the 25 % and 75 % quantiles of the arrival times."""
    low, high = np.quantile(out.arrival_ns, [0.25, 0.75])
    idx = np.flatnonzero((out.arrival_ns >= low) & (out.arrival_ns <= high))
    lat = latencies_s(out, idx)
    done = np.where(out.rejected, out.arrival_ns, out.finish_ns)

    def in_system(t: float) -> int:
        return int(np.count_nonzero((out.arrival_ns <= t) & (done > t)))

    middle = np.quantile(out.arrival_ns, 0.5)  # the decode pool has filled up by then
    arrived = np.count_nonzero((out.arrival_ns > middle) & (out.arrival_ns <= high))
    growth = (in_system(high) - in_system(middle)) / max(arrived, 1)
    figures = {"slo_attainment": float(meets_slo(out, idx, req).mean()), "backlog_growth": growth}
    for q in (50, 90, 99):
        figures[f"ttft_p{q}_s"] = float(np.percentile(lat["ttft"], q, method="inverted_cdf"))
        figures[f"tpot_p{q}_ms"] = float(np.percentile(lat["tpot"] * 1e3, q, method="inverted_cdf"))
    return figures


def prefill_ttft_s(doc: dict, plan: Path, rate: float, requests: int, workdir: Path) -> list[dict]:
    """Per seed, TTFT percentiles (``ttft_p50_s``, ...) of the steady middle half of a run of
    the prefill pool alone: ``requests`` requests of the service at ``rate``, each with one
    output token (module doc)."""
    path = instance_at(doc, rate, workdir)
    inst, dep = prepare(str(path), str(plan), Settings())
    trace = load_trace(inst.workload, str(path))
    out = []
    for seed in range(SEEDS):
        reqs = make_requests(inst.workload, requests, seed, trace)
        alone = Requests(reqs.prompt_tokens, np.ones_like(reqs.output_tokens), reqs.arrival_s)
        result = simulate_disagg(dep.prefill, dep.decode, dep.transfer.ns, alone)
        low, high = np.quantile(result.arrival_ns, [0.25, 0.75])
        idx = np.flatnonzero((result.arrival_ns >= low) & (result.arrival_ns <= high) & ~result.rejected)
        ttft = (result.first_token_ns[idx] - result.arrival_ns[idx]) * 1e-9
        out.append({f"ttft_p{q}_s": float(np.percentile(ttft, q, method="inverted_cdf")) for q in (50, 90, 99)})
    return out


def med(values) -> float:
    return statistics.median(values)


def saturated_rps(out) -> float:
    """Completions per second from the arrival at 50 % to the last arrival (overloaded)."""
    arrivals = np.sort(out.arrival_ns)
    start, end = arrivals[len(arrivals) // 2], arrivals[-1]
    done = np.count_nonzero((out.finish_ns >= start) & (out.finish_ns <= end))
    return done / ((end - start) * 1e-9)


def simulated_goodput(doc: dict, plan: Path, guess: float, capacity: float, requests: int, workdir: Path,
                      steps: int) -> tuple[float, float]:
    """[low, high] bracket of the simulated goodput: the median steady attainment of the
    seeds meets the percentile at ``low`` and not at ``high``, no higher than ``capacity``
    (the simulated sustainable rate: beyond it the backlog grows without bound, even while a
    finite run still meets the SLOs). Bisection from 0.5x ``guess`` to ``capacity``."""
    share = doc.get("requirements", {}).get("latency_percentile", 90) / 100

    def meets(rate: float) -> bool:
        return med(f["slo_attainment"] for _, _, f in simulate_at(doc, plan, rate, requests, workdir)) >= share

    low, high = min(0.5 * guess, 0.5 * capacity), capacity
    if not meets(low):
        return 0.0, low
    if meets(high):
        return high, high
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (mid, high) if meets(mid) else (low, mid)
    return low, high


def verdict(ratio: float | None, target: float, judged: bool) -> str:
    if ratio is None:
        return ""
    ok = abs(ratio - 1) <= target
    return ("ok" if ok else "MISS") + ("" if judged else " (utilisation > 85 %: not judged)")


def row(name: str, predicted, simulated: float, target: float | None, judged: bool) -> str:
    ratio = predicted / simulated if isinstance(predicted, (int, float)) and simulated else None
    shown = "-" if predicted is None else f"{predicted:.6g}"
    tail = f"{ratio:.3f}  {verdict(ratio, target, judged)}" if ratio is not None and target else ""
    return f"  {name:28s} {shown:>12s} {simulated:12.6g}  {tail}"


def compare(instance: str, plan: str, requests: int, goodput_steps: int, workdir: Path,
            prefill_requests: int = 40_000) -> None:
    doc = json.loads(Path(instance).read_text())
    plan_doc = json.loads(Path(plan).read_text())
    metrics = plan_doc.get("metrics") if isinstance(plan_doc.get("metrics"), dict) else {}
    rate = metrics.get("rate_rps") or doc["workload"].get("arrival_rate_rps")
    if not rate:
        raise SystemExit("no rate: the plan states no metrics.rate_rps and the instance no arrival_rate_rps")
    p = doc.get("requirements", {}).get("latency_percentile", 90)
    sims = simulate_at(doc, Path(plan), rate, requests, workdir)
    summaries = [s for s, _, _ in sims]
    figures = [f for _, _, f in sims]
    util = metrics.get("utilization")
    sim_util = {role: med(s["pools"][role]["utilization"] for s in summaries) for role in ("prefill", "decode")}
    judged = (util if util is not None else max(sim_util.values())) <= MAX_UTILIZATION
    ttft_key, tpot_key = f"ttft_p{p}_s", f"tpot_p{p}_ms"
    print(f"{Path(plan).name} on {Path(instance).name}: {plan_doc.get('num_gpus')} GPUs, rate {rate:.6g} "
          f"requests/s, {requests} requests x {SEEDS} seeds (median; latencies over the steady middle half)")
    print(f"  {'figure':28s} {'predicted':>12s} {'simulated':>12s}  ratio")
    for key, target in ((ttft_key, TARGETS["ttft"]), (tpot_key, TARGETS["tpot"])):
        print(row(key, metrics.get(key), med(f[key] for f in figures), target, judged))
    if prefill_requests > 0:
        alone = prefill_ttft_s(doc, Path(plan), rate, prefill_requests, workdir)
        print(row(f"{ttft_key} ({prefill_requests} prefill)", metrics.get(ttft_key), med(f[ttft_key] for f in alone),
                  TARGETS["ttft"], judged))
    print(row("slo_attainment", None, med(f["slo_attainment"] for f in figures), None, judged))
    print(row("backlog growth / arrivals", None, med(f["backlog_growth"] for f in figures), None, judged))
    print(row("utilization (max of pools)", util, max(sim_util.values()), None, judged))
    for role in ("prefill", "decode"):
        print(row(f"  {role} utilization", None, sim_util[role], None, judged))
        print(row(f"  {role} peak KV fraction", None,
                  med(s["pools"][role]["peak_kv_fraction"] for s in summaries), None, judged))
    print(row("transfer_s (mean)", (plan_doc.get("transfer") or {}).get("transfer_s"),
              med(s["transfer"]["transfer_s_mean"] for s in summaries), 0.01, True))
    goodput, sustainable = metrics.get("goodput_rps"), metrics.get("sustainable_rps")
    if not (goodput or sustainable) or goodput_steps <= 0:
        return
    offered = 1.5 * (sustainable or goodput)
    over = simulate_at(doc, Path(plan), offered, max(6000, 2 * requests), workdir)
    capacity = med(saturated_rps(o) for _, o, _ in over)
    print(row(f"sustainable_rps (at {offered:.4g})", sustainable, capacity, TARGETS["rate"], True))
    if goodput:
        low, high = simulated_goodput(doc, Path(plan), goodput, capacity, requests, workdir, goodput_steps)
        print(row(f"goodput_rps (sim in [{low:.4g}, {high:.4g}])", goodput, (low + high) / 2, TARGETS["rate"], judged))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("instance")
    ap.add_argument("plan", nargs="?")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--prefill-requests", type=int, default=40_000,
                    help="requests of the prefill-only TTFT run (0: skip it)")
    ap.add_argument("--goodput-steps", type=int, default=5, help="bisection steps of the simulated goodput")
    ap.add_argument("--no-goodput", action="store_true")
    ap.add_argument("--from-agg", help="aggregated service plan whose replica both pools copy")
    ap.add_argument("--pools", default="1:1", help="X:Y prefill and decode replicas (with --from-agg)")
    ap.add_argument("--write", help="where --from-agg writes the disaggregated plan")
    args = ap.parse_args()
    if args.from_agg:
        if not args.write:
            raise SystemExit("--from-agg needs --write PATH")
        x, y = (int(v) for v in args.pools.split(":"))
        Path(args.write).write_text(json.dumps(disagg_from_agg(json.loads(Path(args.from_agg).read_text()), x, y),
                                               indent=1))
        args.plan = args.write
    if not args.plan:
        raise SystemExit("give PLAN, or --from-agg AGG_PLAN --write PATH")
    with tempfile.TemporaryDirectory(prefix="bench_disagg_") as tmp:
        compare(args.instance, args.plan, args.requests, 0 if args.no_goodput else args.goodput_steps, Path(tmp),
                args.prefill_requests)


if __name__ == "__main__":
    main()
