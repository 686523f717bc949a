"""The planner's service predictions against the discrete-event simulator: per instance, the
planned configuration at several rates (fractions of the planner's sustainable rate, and the
instance's own), predicted vs simulated p90 TTFT and TPOT (median over 3 seeds), and the
sustainable rate (planner vs the simulated completion rate while offered 1.25x it, measured
once the engine is full, median over 3 seeds).

The simulator is read in steady state, as the planner predicts it: requests that arrive in
the first 2 lifetimes (2 x the predicted p90 end-to-end latency, at least 10 % of them) are a
warm-up, requests that arrive in the last lifetime see a draining engine; both are left out.

    python -m benchmarks.bench_service_agreement [INSTANCE ...] [--random K] [--seed S] [--slice A:B]
                                                 [--store DIR] [--write-plans DIR]

``--random K`` adds K random service instances (``random_instances``: shipped models and
GPUs, fixed or distributed lengths, each at 3 rates drawn from 20-85 % of the plan's
sustainable rate). The summary counts the rows within the tolerances of docs/serving-model.md
(TTFT +-15 %, TPOT +-5 %, sustainable rate +-10 %).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.cli.common import dump
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import predict, sustainable_rps
from optimizer.costs.serving.replica import service_load
from optimizer.cpsat.service_solve import solve_service
from optimizer.inputs.schema import Instance
from optimizer.inputs.service import make_requests
from optimizer.plan.service import KNOB_NAMES, peak_memory_bytes, plan_replica, service_plan_to_json
from optimizer.simulate.deployment import deployment, structural_plan
from optimizer.simulate.engine import simulate

SHIPPED = ["instances/10b_moe_service.json", "instances/qwen3_30b_a3b_h200_service.json",
           "instances/mixtral_8x7b_bf16_h100_service.json", "instances/deepseek_v3_fp8_h200_service.json"]
FRACTIONS = (0.3, 0.6, 0.85)
SEEDS = (0, 1, 2)
TOLERANCE = {"ttft": 0.15, "tpot": 0.05, "sustainable": 0.10}
MEASURED_REQUESTS = 1000  # requests measured per run (after the warm-up, before the drain)
MAX_REQUESTS = 12_000  # per run; the warm-up shrinks to fit when lifetimes are long
OVERLOAD = 1.25  # offered / planned sustainable rate when the simulated capacity is measured
MAX_OVERLOAD_REQUESTS = 48_000  # per overloaded run, when the fill-up is long
WINDOW_LIFETIMES = 10  # simulated decode lives the full-engine window must span at least
# Random instances: (shipped instance, GPU counts to draw from).
RANDOM_BASES = (("instances/qwen3_30b_a3b_h200_service.json", (1, 2, 4, 8)),
                ("instances/mixtral_8x7b_bf16_h100_service.json", (2, 4, 8)),
                ("instances/10b_moe_service.json", (1, 2, 4, 8)),
                ("instances/deepseek_v2_lite_bf16_a100.json", (1, 2, 4)),
                ("instances/deepseek_v3_fp8_h200_service.json", (8,)))


@dataclass(frozen=True)
class Case:
    """One instance to compare: its document and the rates (fractions of the plan's
    sustainable rate; ``own`` adds the instance's own rate)."""

    name: str
    doc: dict
    fractions: tuple[float, ...]
    own_rate: bool = True


def _length(rng: np.random.Generator, mean: int, spread: str) -> int | dict:
    if spread == "fixed":
        return mean
    if spread == "uniform":
        return {"kind": "uniform", "min_tokens": max(1, mean // 2), "max_tokens": mean * 3 // 2}
    if spread == "lognormal":
        return {"kind": "lognormal", "mean_tokens": mean, "sigma": 0.5, "min_tokens": 1, "max_tokens": 4 * mean}
    return {"kind": "exponential", "mean_tokens": mean, "min_tokens": 1, "max_tokens": 4 * mean}


def random_instances(count: int, seed: int = 0) -> list[Case]:
    """``count`` random services: a shipped model and GPU (``RANDOM_BASES``), a GPU count,
    prompt and output lengths (means log-uniform in 256-8192 and 32-512 tokens; fixed,
    uniform, lognormal or exponential), loose SLOs (so a plan exists) and 3 rates drawn
    uniformly from 20-85 % of the plan's sustainable rate."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        base_path, gpu_counts = RANDOM_BASES[int(rng.integers(len(RANDOM_BASES)))]
        doc = json.loads(Path(base_path).read_text())
        prompt = int(round(math.exp(rng.uniform(math.log(256), math.log(8192)))))
        output = int(round(math.exp(rng.uniform(math.log(32), math.log(512)))))
        spreads = ("fixed", "uniform", "lognormal", "exponential")
        doc["name"] = f"random_{seed}_{i:02d}"
        doc["hardware"]["num_gpus"] = int(rng.choice(gpu_counts))
        doc["workload"] = {"kind": "service", "arrival_rate_rps": 0.01,
                           "prompt_tokens": _length(rng, prompt, spreads[int(rng.integers(4))]),
                           "output_tokens": _length(rng, output, spreads[int(rng.integers(4))])}
        doc["requirements"] = {"max_ttft_s": 60.0, "max_tpot_ms": 1000.0, "latency_percentile": 90,
                               **({"max_memory_gb": doc["requirements"]["max_memory_gb"]}
                                  if "max_memory_gb" in doc["requirements"] else {})}
        doc["search"] = {**doc.get("search", {}), "time_limit_s": 10.0, "workers": 1}
        fractions = tuple(sorted(float(f) for f in rng.uniform(0.2, 0.85, size=3)))
        cases.append(Case(doc["name"], doc, fractions, own_rate=False))
    return cases


def shipped_case(path: str) -> Case:
    return Case(Path(path).stem, json.loads(Path(path).read_text()), FRACTIONS)


def steady_p90(out, lifetime_s: float) -> tuple[float, float, int]:
    """(p90 TTFT s, p90 TPOT ms, requests measured) over the requests that arrive after a
    warm-up of 2 lifetimes (at least the first 10 %) and at least one lifetime before the last
    arrival (nearest-rank percentiles, as ``moeopt simulate``)."""
    arrival = out.arrival_ns / 1e9
    start = max(arrival[len(arrival) // 10], arrival[0] + 2.0 * lifetime_s)
    end = arrival[-1] - lifetime_s
    keep = (arrival >= start) & (arrival <= end) & ~out.rejected
    if keep.sum() < 100:  # lifetimes too long for the run: measure what the warm-up leaves
        keep = (arrival >= arrival[len(arrival) // 10]) & ~out.rejected
    ttft = (out.first_token_ns[keep] - out.arrival_ns[keep]) / 1e9
    multi = keep & (out.output_tokens > 1)
    tpot = (out.finish_ns[multi] - out.first_token_ns[multi]) / (out.output_tokens[multi] - 1) / 1e6
    pct = lambda x: float(np.percentile(x, 90, method="inverted_cdf")) if len(x) else math.nan  # noqa: E731
    return pct(ttft), pct(tpot), int(keep.sum())


def saturated_throughput_rps(out) -> tuple[float, float]:
    """(completions per second, share of the arrival span measured) of an overloaded
    deployment once its engine is full: from the first instant at which the requests
    decoding (first token out, not finished) reach 90 % of their peak (both smoothed over
    1/40 of the arrival span) to the last arrival. The fill-up before (the engine admits
    full-budget prompt steps and nothing completes until the first requests have run
    their outputs, docs/simulator.md "Overload") and the drain after are left out."""
    first, last = int(out.arrival_ns.min()), int(out.arrival_ns.max())
    grid = np.linspace(first, last, 401)
    started = np.searchsorted(np.sort(out.first_token_ns[~out.rejected]), grid, side="right")
    finished = np.searchsorted(np.sort(out.finish_ns[~out.rejected]), grid, side="right")
    decoding = np.convolve(started - finished, np.ones(10) / 10, mode="same")
    start = int(grid[int(np.argmax(decoding >= 0.9 * decoding.max()))])
    if start >= last:
        return 0.0, 0.0
    done = np.count_nonzero((out.finish_ns >= start) & (out.finish_ns <= last))
    return done / ((last - start) * 1e-9), (last - start) / (last - first)


def second_half_throughput_rps(out) -> float:
    """The measure used before ``saturated_throughput_rps``: completions per second from the
    arrival of the request at 50 % to the last arrival (kept to report what the change did;
    it counts part of the fill-up when that lasts more than half the arrival span)."""
    arrivals = np.sort(out.arrival_ns)
    start, end = arrivals[len(arrivals) // 2], arrivals[-1]
    done = np.count_nonzero((out.finish_ns >= start) & (out.finish_ns <= end))
    return done / ((end - start) * 1e-9)


def simulated_capacity_rps(dep, workload, sustainable_rps: float, lifetime_s: float, seed: int) -> tuple[float, float]:
    """(``saturated_throughput_rps``, ``second_half_throughput_rps`` of the first run) at
    ``OVERLOAD`` x the planned sustainable rate. The first run's size comes from the planned
    ``lifetime_s``; a run whose full-engine window is under half its arrival span, or shorter
    than ``WINDOW_LIFETIMES`` simulated decode lives (the median first-token-to-finish time of
    the requests it completes), is run again with twice the requests (at most
    ``MAX_OVERLOAD_REQUESTS``), so the measure does not depend on the planner's figure: while
    the engine is still filling, completions lag the throughput (a pp 4 engine with 90 s decode
    lives read 10.8, 11.2, 11.4 and 11.5 requests/s at 9,800, 12,000, 16,000 and 24,000
    requests)."""
    over = workload.model_copy(update={"arrival_rate_rps": OVERLOAD * sustainable_rps, "concurrency": None})
    n = int(min(MAX_REQUESTS, max(6000, 6.0 * OVERLOAD * sustainable_rps * lifetime_s)))
    before = None
    while True:
        out = simulate(dep, make_requests(over, n, seed))
        before = second_half_throughput_rps(out) if before is None else before
        rate, measured = saturated_throughput_rps(out)
        span_s = (int(out.arrival_ns.max()) - int(out.arrival_ns.min())) * 1e-9
        if (measured >= 0.5 and measured * span_s >= WINDOW_LIFETIMES * _decode_life_s(out)) \
                or 2 * n > MAX_OVERLOAD_REQUESTS:
            return rate, before
        n *= 2


def _decode_life_s(out) -> float:
    """Median first-token-to-finish time (s) of the requests a run completes."""
    done = ~out.rejected & (out.finish_ns >= 0)
    return float(np.median(out.finish_ns[done] - out.first_token_ns[done])) * 1e-9 if done.any() else 0.0


def _requests_for(rate: float, lifetime_s: float, measured: int = MEASURED_REQUESTS) -> int:
    return int(min(MAX_REQUESTS, max(1.5 * measured, measured + 3.0 * rate * lifetime_s)))


def _within(ratio: float, tolerance: float) -> bool:
    return abs(ratio - 1.0) <= tolerance


def planned(case: Case, time_limit_s: float | None = None) -> dict:
    """The plan document the planner chooses for ``case``; the solve gets ``time_limit_s``
    (default the instance's search.time_limit_s, at most 30 s)."""
    inst = Instance.model_validate(case.doc)
    result = solve_service(inst, time_limit_s=time_limit_s or min(30.0, inst.search.time_limit_s))
    memory = peak_memory_bytes(inst, result.plan, result.chosen.knobs, result.load)
    return json.loads(dump(service_plan_to_json(result.plan, result.chosen, memory, result.status, {})))


def compare(case: Case, workdir: Path | None = None, time_limit_s: float | None = None) -> list[dict]:
    """Rows of (instance, rate, rate / sustainable, predicted and simulated figures, ratios)
    and a last row with the sustainable rates, for the plan the planner chooses."""
    return compare_plan(case, planned(case, time_limit_s))


def compare_plan(case: Case, plan_doc: dict, seeds: tuple[int, ...] = SEEDS, seed_per_rate: bool = False,
                 measured: int = MEASURED_REQUESTS, sims: dict | None = None) -> list[dict]:
    """``compare``'s rows for a given plan document: the planner's predictions for that plan
    (its own structure and knobs) against the simulation, the median over ``seeds`` (with
    ``seed_per_rate``, one run per rate instead, seed i for the i-th rate, and the capacity
    from the first seed alone), about ``measured`` requests measured per run. ``sims``, when
    given, stores the simulated figures: an empty dict is filled (rates, the lifetime that
    set each run's steady window, per-seed p90s, capacities); a filled one is reused, so
    another model is compared on the same rates and simulations without simulating."""
    inst = Instance.model_validate(case.doc)
    dep = deployment(inst, plan_doc, {})
    plan = structural_plan(inst, plan_doc)
    knobs = ServingKnobs(*(plan_doc["serving"][name] for name in KNOB_NAMES))
    load = service_load(inst.workload)
    rep = plan_replica(inst, plan, load)
    sustainable = sustainable_rps(rep, knobs, load)
    stored = bool(sims)
    if not stored:
        rates = sorted({f * sustainable for f in case.fractions}
                       | ({inst.workload.arrival_rate_rps} if case.own_rate and inst.workload.arrival_rate_rps
                          else set()))
        sims = {} if sims is None else sims
        sims["runs"] = []
        for rate in rates:
            m = predict(rep, knobs, load, rate)
            lifetime = m.e2e_p90_s if math.isfinite(m.e2e_p90_s) else 60.0
            sims["runs"].append({"rate_rps": rate, "load_drawn": rate / sustainable, "lifetime_s": lifetime})
        simulate_runs(inst, dep, sims["runs"], seeds, seed_per_rate, measured)
        lifetime = predict(rep, knobs, load, 0.85 * sustainable).e2e_p90_s
        capacities = [simulated_capacity_rps(dep, inst.workload, sustainable, lifetime, seed)
                      for seed in (seeds[:1] if seed_per_rate else seeds)]
        sims["capacity"] = {"offered_rps": OVERLOAD * sustainable, "full_engine_rps": [c[0] for c in capacities],
                            "second_half_rps": [c[1] for c in capacities]}
    deg = plan.deg
    config = (f"tp{deg.tp} pp{deg.pp} dp{deg.dp} ep{deg.ep} B{knobs.max_running_requests} "
              f"C{knobs.prefill_chunk_tokens} s{load.prompt_tokens} D{load.output_tokens}")
    rows = []
    for run in sims["runs"]:
        rate, runs = run["rate_rps"], run["p90s"]
        m = predict(rep, knobs, load, rate)
        ttft, tpot = statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs)
        rows.append({"instance": case.name, "config": config, "rate_rps": rate, "load": rate / sustainable,
                     "load_drawn": run["load_drawn"],
                     "ttft_p90_pred_s": m.ttft_p90_s, "ttft_p90_sim_s": ttft, "ttft_ratio": m.ttft_p90_s / ttft,
                     "tpot_p90_pred_ms": m.tpot_p90_ms, "tpot_p90_sim_ms": tpot,
                     "tpot_ratio": m.tpot_p90_ms / tpot if load.output_tokens > 1 else math.nan,
                     "measured": min(s[2] for s in runs),
                     "ttft_seed_spread": _spread([s[0] for s in runs]), "tpot_seed_spread": _spread([s[1] for s in runs])})
    simulated = statistics.median(sims["capacity"]["full_engine_rps"])
    before = statistics.median(sims["capacity"]["second_half_rps"])
    rows.append({"instance": case.name, "config": config, "rate_rps": sims["capacity"]["offered_rps"],
                 "load": OVERLOAD, "sustainable_pred_rps": sustainable, "sustainable_sim_rps": simulated,
                 "sustainable_ratio": sustainable / simulated if simulated > 0 else math.inf,
                 "sustainable_ratio_second_half": sustainable / before if before > 0 else math.inf})
    return rows


def _spread(values: list[float]) -> float:
    """max / min - 1 of the seeds' readings of one figure: the referee's own spread."""
    low = min(values)
    return max(values) / low - 1.0 if low > 0 else math.nan


def referee_spread(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Per figure, the median and the 90th percentile over the rate rows at <= 85 % load of
    the seeds' spread (``_spread``): how far the referee itself moves from seed to seed."""
    at = [r for r in rows if "ttft_ratio" in r and r["load_drawn"] <= 0.85 + 1e-9]
    out = {}
    for key in ("ttft", "tpot"):
        values = [r[f"{key}_seed_spread"] for r in at if not math.isnan(r[f"{key}_seed_spread"])]
        if values:
            out[key] = (float(np.median(values)), float(np.percentile(values, 90)))
    return out


def simulate_runs(inst: Instance, dep, runs: list[dict], seeds: tuple[int, ...] = SEEDS,
                  seed_per_rate: bool = False, measured: int = MEASURED_REQUESTS) -> None:
    """Fill each run of ``runs`` (its ``rate_rps`` and ``lifetime_s``, the steady window's
    lifetime) with its request count and per-seed (p90 TTFT, p90 TPOT, measured), about
    ``measured`` requests measured per seed (``seed_per_rate``: one seed per rate, seed i
    for the i-th)."""
    for i, run in enumerate(runs):
        rate, lifetime = run["rate_rps"], run["lifetime_s"]
        wl = inst.workload.model_copy(update={"arrival_rate_rps": rate, "concurrency": None})
        n = _requests_for(rate, lifetime, measured)
        run["requests"] = n
        run["p90s"] = [list(steady_p90(simulate(dep, make_requests(wl, n, seed)), lifetime))
                       for seed in ((seeds[i % len(seeds)],) if seed_per_rate else seeds)]


def remeasured(case: Case, source: Path, measured: int) -> tuple[dict, dict]:
    """(plan, simulations) of ``case`` from the store ``source`` with its rate rows simulated
    again at the same rates and steady windows, about ``measured`` requests measured per seed;
    the stored capacities are kept (a longer referee for the rows without the long overload
    runs)."""
    plan_doc = json.loads((source / f"{case.name}.plan.json").read_text())
    sims = json.loads((source / f"{case.name}.sims.json").read_text())
    inst = Instance.model_validate(case.doc)
    simulate_runs(inst, deployment(inst, plan_doc, {}), sims["runs"], measured=measured)
    return plan_doc, sims


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        if "sustainable_ratio" in r:
            print(f"{r['instance']:32s} sustainable rate: planner {r['sustainable_pred_rps']:.4g} rps, "
                  f"simulated {r['sustainable_sim_rps']:.4g} rps, ratio {r['sustainable_ratio']:.3f} "
                  f"(second-half measure {r['sustainable_ratio_second_half']:.3f})   [{r['config']}]",
                  flush=True)
            continue
        print(f"{r['instance']:32s} {r['rate_rps']:9.4g} {r['load']:5.2f} {r['ttft_p90_pred_s']:10.4g} "
              f"{r['ttft_p90_sim_s']:10.4g} {r['ttft_ratio']:6.3f} {r['tpot_p90_pred_ms']:10.4g} "
              f"{r['tpot_p90_sim_ms']:10.4g} {r['tpot_ratio']:6.3f} {r['measured']:6d}", flush=True)


def summary(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """Per figure, (rows within tolerance, rows) over the rates at <= 85 % load (of the
    sustainable rate the rate was drawn from, so that stored runs count the same rows)."""
    at = [r for r in rows if "ttft_ratio" in r and r["load_drawn"] <= 0.85 + 1e-9]
    tpot = [r for r in at if not math.isnan(r["tpot_ratio"])]
    sus = [r for r in rows if "sustainable_ratio" in r]
    return {"ttft": (sum(_within(r["ttft_ratio"], TOLERANCE["ttft"]) for r in at), len(at)),
            "tpot": (sum(_within(r["tpot_ratio"], TOLERANCE["tpot"]) for r in tpot), len(tpot)),
            "sustainable": (sum(_within(r["sustainable_ratio"], TOLERANCE["sustainable"]) for r in sus), len(sus)),
            "sustainable, second-half measure": (
                sum(_within(r["sustainable_ratio_second_half"], TOLERANCE["sustainable"]) for r in sus), len(sus))}


def _case_rows(case: Case, store: Path | None, measured: int = MEASURED_REQUESTS,
               remeasure_from: Path | None = None) -> list[dict]:
    """``compare``'s rows, with the plan and simulations of ``store`` when it holds them (and
    written there when it does not; with ``remeasure_from``, taken from that store with the
    rate rows simulated again, ``remeasured``)."""
    if store is None:
        return compare_plan(case, planned(case), measured=measured)
    store.mkdir(parents=True, exist_ok=True)
    plan_path, sims_path = store / f"{case.name}.plan.json", store / f"{case.name}.sims.json"
    if remeasure_from is not None and not sims_path.exists():
        plan_doc, sims = remeasured(case, remeasure_from, measured)
        plan_path.write_text(json.dumps(plan_doc, indent=1) + "\n")
        sims_path.write_text(json.dumps(sims, indent=1) + "\n")
    if not plan_path.exists():
        plan_path.write_text(json.dumps(planned(case), indent=1) + "\n")
    sims = json.loads(sims_path.read_text()) if sims_path.exists() else {}
    rows = compare_plan(case, json.loads(plan_path.read_text()), measured=measured, sims=sims)
    if not sims_path.exists():
        sims_path.write_text(json.dumps(sims, indent=1) + "\n")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("instances", nargs="*", default=None)
    ap.add_argument("--random", type=int, default=0, help="random service instances to add")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random instances")
    ap.add_argument("--slice", default=None, metavar="FIRST:END",
                    help="only the random instances FIRST .. END - 1 (to split a run over processes)")
    ap.add_argument("--write-plans", default=None, metavar="DIR",
                    help="write each case's instance and chosen plan to DIR (NAME.instance.json, "
                         "NAME.plan.json) and stop")
    ap.add_argument("--store", default=None, metavar="DIR",
                    help="plans and simulated figures in DIR: a case's stored plan (NAME.plan.json) "
                         "is used instead of solving, its stored simulations (NAME.sims.json) instead "
                         "of simulating; missing ones are computed and written")
    ap.add_argument("--stored-only", action="store_true",
                    help="with --store: only the cases whose simulations are stored (no solve, no simulation)")
    ap.add_argument("--measured", type=int, default=MEASURED_REQUESTS, metavar="N",
                    help=f"requests measured per seed and rate (default {MEASURED_REQUESTS})")
    ap.add_argument("--remeasure-from", default=None, metavar="DIR",
                    help="with --store: a case missing there takes DIR's plan, rates and capacities "
                         "and its rate rows are simulated again (--measured N); then written to --store")
    args = ap.parse_args()
    if args.remeasure_from and not args.store:
        ap.error("--remeasure-from needs --store")
    paths = args.instances if args.instances is not None and (args.instances or not args.random) else []
    if args.instances == [] and not args.random:
        paths = SHIPPED
    randoms = random_instances(args.random, args.seed)
    if args.slice:
        first, end = (int(x) for x in args.slice.split(":"))
        randoms = randoms[first:end]
    cases = [shipped_case(p) for p in paths] + randoms
    if args.write_plans:
        for case in cases:
            out = Path(args.write_plans)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{case.name}.instance.json").write_text(json.dumps(case.doc, indent=1) + "\n")
            (out / f"{case.name}.plan.json").write_text(json.dumps(planned(case), indent=1) + "\n")
        return
    print(f"{'instance':32s} {'rate':>9s} {'load':>5s} {'ttft90 pred':>10s} {'sim':>10s} {'ratio':>6s} "
          f"{'tpot90 pred':>10s} {'sim':>10s} {'ratio':>6s} {'meas.':>6s}")
    rows: list[dict] = []
    source = Path(args.remeasure_from) if args.remeasure_from else None
    if args.stored_only and args.store:
        cases = [c for c in cases if (Path(args.store) / f"{c.name}.sims.json").exists()
                 or (source is not None and (source / f"{c.name}.sims.json").exists())]
    for case in cases:
        try:
            found = _case_rows(case, Path(args.store) if args.store else None, args.measured, source)
        except Exception as exc:  # noqa: BLE001 - a random instance without a plan is reported
            print(f"{case.name:32s} skipped: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            continue
        print_rows(found)
        rows.extend(found)
    print("within tolerance at <= 85 % of the sustainable rate:")
    for key, (ok, total) in summary(rows).items():
        print(f"  {key:12s} {ok} of {total} (+-{TOLERANCE[key.split(',')[0]]:.0%})")
    spread = referee_spread(rows)
    if spread:
        print(f"the referee's own spread, max / min - 1 of the {len(SEEDS)} seeds' p90s per row "
              "(median, 90th percentile over the rows):")
        for key, (mid, high) in spread.items():
            print(f"  {key:12s} {mid:.1%}, {high:.1%}")


if __name__ == "__main__":
    main()
