"""The planner's service predictions against the discrete-event simulator: per instance, the
planned configuration at several rates (fractions of the planner's sustainable rate, and the
instance's own), predicted vs simulated p90 TTFT and TPOT (median over 3 seeds), and the
sustainable rate (planner vs the simulated completion rate while offered 1.25x it, median
over 3 seeds).

The simulator is read in steady state, as the planner predicts it: requests that arrive in
the first 2 lifetimes (2 x the predicted p90 end-to-end latency, at least 10 % of them) are a
warm-up, requests that arrive in the last lifetime see a draining engine; both are left out.

    python -m benchmarks.bench_service_agreement [INSTANCE ...] [--random K] [--seed S]

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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.cli.common import dump
from optimizer.costs.serving.metrics import predict
from optimizer.costs.serving.search import prepared_groups
from optimizer.cpsat.service_solve import placements, solve_service
from optimizer.inputs.schema import Instance
from optimizer.inputs.service import make_requests
from optimizer.plan.service import peak_memory_bytes, service_plan_to_json
from optimizer.simulate.deployment import deployment
from optimizer.simulate.engine import simulate

SHIPPED = ["instances/10b_moe_service.json", "instances/qwen3_30b_a3b_h200_service.json",
           "instances/mixtral_8x7b_bf16_h100_service.json", "instances/deepseek_v3_fp8_h200_service.json"]
FRACTIONS = (0.3, 0.6, 0.85)
SEEDS = (0, 1, 2)
TOLERANCE = {"ttft": 0.15, "tpot": 0.05, "sustainable": 0.10}
MEASURED_REQUESTS = 1000  # requests measured per run (after the warm-up, before the drain)
MAX_REQUESTS = 12_000  # per run; the warm-up shrinks to fit when lifetimes are long
OVERLOAD = 1.25  # offered / planned sustainable rate when the simulated capacity is measured
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


def chosen_replica(inst, result):
    """The serving model's replica of the chosen configuration and knobs."""
    deg, knobs = result.chosen.deg, result.chosen.knobs
    loads, ranks = placements(inst, [deg.ep])
    groups, _ = prepared_groups(inst, deg.num_gpus, result.load, loads, ranks, [deg])
    for _, group, rep in groups:
        if knobs in group:
            return rep
    raise RuntimeError("chosen knobs not among the prepared groups")


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


def saturated_throughput_rps(out) -> float:
    """Completions per second while an overloaded deployment's queue grows: from the arrival
    of the request at 50 % to the last arrival (the fill-up before and the drain after,
    when fewer requests run, are left out)."""
    arrivals = np.sort(out.arrival_ns)
    start, end = arrivals[len(arrivals) // 2], arrivals[-1]
    done = np.count_nonzero((out.finish_ns >= start) & (out.finish_ns <= end))
    return done / ((end - start) * 1e-9)


def _requests_for(rate: float, lifetime_s: float) -> int:
    return int(min(MAX_REQUESTS, max(1500, MEASURED_REQUESTS + 3.0 * rate * lifetime_s)))


def _within(ratio: float, tolerance: float) -> bool:
    return abs(ratio - 1.0) <= tolerance


def compare(case: Case, workdir: Path, time_limit_s: float | None = None) -> list[dict]:
    """Rows of (instance, rate, rate / sustainable, predicted and simulated figures, ratios)
    and a last row with the sustainable rates; the solve gets ``time_limit_s`` (default the
    instance's search.time_limit_s, at most 30 s)."""
    inst = Instance.model_validate(case.doc)
    result = solve_service(inst, time_limit_s=time_limit_s or min(30.0, inst.search.time_limit_s))
    memory = peak_memory_bytes(inst, result.plan, result.chosen.knobs, result.load)
    plan_doc = json.loads(dump(service_plan_to_json(result.plan, result.chosen, memory, result.status, {})))
    dep = deployment(inst, plan_doc, {})
    rep, knobs, load = chosen_replica(inst, result), result.chosen.knobs, result.load
    sustainable = result.chosen.sustainable_rps
    rates = sorted({f * sustainable for f in case.fractions}
                   | ({inst.workload.arrival_rate_rps} if case.own_rate and inst.workload.arrival_rate_rps else set()))
    deg = result.chosen.deg
    config = (f"tp{deg.tp} pp{deg.pp} dp{deg.dp} ep{deg.ep} B{knobs.max_running_requests} "
              f"C{knobs.prefill_chunk_tokens} s{load.prompt_tokens} D{load.output_tokens}")
    rows = []
    for rate in rates:
        m = predict(rep, knobs, load, rate)
        lifetime = m.e2e_p90_s if math.isfinite(m.e2e_p90_s) else 60.0
        wl = inst.workload.model_copy(update={"arrival_rate_rps": rate, "concurrency": None})
        n = _requests_for(rate, lifetime)
        sims = [steady_p90(simulate(dep, make_requests(wl, n, seed)), lifetime) for seed in SEEDS]
        ttft, tpot = statistics.median(s[0] for s in sims), statistics.median(s[1] for s in sims)
        rows.append({"instance": case.name, "config": config, "rate_rps": rate, "load": rate / sustainable,
                     "ttft_p90_pred_s": m.ttft_p90_s, "ttft_p90_sim_s": ttft, "ttft_ratio": m.ttft_p90_s / ttft,
                     "tpot_p90_pred_ms": m.tpot_p90_ms, "tpot_p90_sim_ms": tpot,
                     "tpot_ratio": m.tpot_p90_ms / tpot if load.output_tokens > 1 else math.nan,
                     "measured": min(s[2] for s in sims)})
    over = inst.workload.model_copy(update={"arrival_rate_rps": OVERLOAD * sustainable, "concurrency": None})
    lifetime = predict(rep, knobs, load, 0.85 * sustainable).e2e_p90_s
    n_over = int(min(MAX_REQUESTS, max(6000, 6.0 * OVERLOAD * sustainable * lifetime)))
    simulated = statistics.median(saturated_throughput_rps(simulate(dep, make_requests(over, n_over, seed)))
                                  for seed in SEEDS)
    rows.append({"instance": case.name, "config": config, "rate_rps": OVERLOAD * sustainable, "load": OVERLOAD,
                 "sustainable_pred_rps": sustainable, "sustainable_sim_rps": simulated,
                 "sustainable_ratio": sustainable / simulated if simulated > 0 else math.inf})
    return rows


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        if "sustainable_ratio" in r:
            print(f"{r['instance']:32s} sustainable rate: planner {r['sustainable_pred_rps']:.4g} rps, "
                  f"simulated {r['sustainable_sim_rps']:.4g} rps, ratio {r['sustainable_ratio']:.3f}   [{r['config']}]",
                  flush=True)
            continue
        print(f"{r['instance']:32s} {r['rate_rps']:9.4g} {r['load']:5.2f} {r['ttft_p90_pred_s']:10.4g} "
              f"{r['ttft_p90_sim_s']:10.4g} {r['ttft_ratio']:6.3f} {r['tpot_p90_pred_ms']:10.4g} "
              f"{r['tpot_p90_sim_ms']:10.4g} {r['tpot_ratio']:6.3f} {r['measured']:6d}", flush=True)


def summary(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """Per figure, (rows within tolerance, rows) over the rates at <= 85 % load."""
    at = [r for r in rows if "ttft_ratio" in r and r["load"] <= 0.85 + 1e-9]
    tpot = [r for r in at if not math.isnan(r["tpot_ratio"])]
    sus = [r for r in rows if "sustainable_ratio" in r]
    return {"ttft": (sum(_within(r["ttft_ratio"], TOLERANCE["ttft"]) for r in at), len(at)),
            "tpot": (sum(_within(r["tpot_ratio"], TOLERANCE["tpot"]) for r in tpot), len(tpot)),
            "sustainable": (sum(_within(r["sustainable_ratio"], TOLERANCE["sustainable"]) for r in sus), len(sus))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("instances", nargs="*", default=None)
    ap.add_argument("--random", type=int, default=0, help="random service instances to add")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random instances")
    args = ap.parse_args()
    paths = args.instances if args.instances is not None and (args.instances or not args.random) else []
    if args.instances == [] and not args.random:
        paths = SHIPPED
    cases = [shipped_case(p) for p in paths] + random_instances(args.random, args.seed)
    print(f"{'instance':32s} {'rate':>9s} {'load':>5s} {'ttft90 pred':>10s} {'sim':>10s} {'ratio':>6s} "
          f"{'tpot90 pred':>10s} {'sim':>10s} {'ratio':>6s} {'meas.':>6s}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            try:
                found = compare(case, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - a random instance without a plan is reported
                print(f"{case.name:32s} skipped: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
                continue
            print_rows(found)
            rows.extend(found)
    print("within tolerance at <= 85 % of the sustainable rate:")
    for key, (ok, total) in summary(rows).items():
        print(f"  {key:12s} {ok} of {total} (+-{TOLERANCE[key]:.0%})")


if __name__ == "__main__":
    main()
