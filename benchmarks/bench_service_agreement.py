"""The planner's service predictions against the discrete-event simulator: per instance, the
planned configuration at several rates (fractions of the planner's sustainable rate, and the
instance's own), predicted vs simulated p90 TTFT, TPOT and sustainable rate (median over 3
seeds), with the ratios predicted / simulated.

    python -m benchmarks.bench_service_agreement [INSTANCE ...] [--requests N] [--random K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from optimizer.cli.common import dump
from optimizer.costs.serving.metrics import predict
from optimizer.costs.serving.search import prepared_groups
from optimizer.cpsat.service_solve import placements, solve_service
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.plan.service import peak_memory_bytes, service_plan_to_json
from optimizer.simulate.run import Settings, run

SHIPPED = ["instances/10b_moe_service.json", "instances/qwen3_30b_a3b_h200_service.json",
           "instances/mixtral_8x7b_bf16_h100_service.json", "instances/deepseek_v3_fp8_h200_service.json"]
FRACTIONS = (0.3, 0.6, 0.85)


def chosen_replica(inst, result):
    """The serving model's replica of the chosen configuration and knobs."""
    deg, knobs = result.chosen.deg, result.chosen.knobs
    loads, ranks = placements(inst, [deg.ep])
    groups, _ = prepared_groups(inst, deg.num_gpus, result.load, loads, ranks, [deg])
    for _, group, rep in groups:
        if knobs in group:
            return rep
    raise RuntimeError("chosen knobs not among the prepared groups")


def simulate_at(doc: dict, plan_path: Path, rate: float, requests: int, workdir: Path) -> list[tuple]:
    """(summary, outcome) of 3 seeds at ``rate``."""
    doc = json.loads(json.dumps(doc))
    doc["workload"]["arrival_rate_rps"] = rate
    doc["workload"].pop("concurrency", None)
    path = workdir / f"inst_{rate:.6g}.json"
    path.write_text(json.dumps(doc))
    return [run(str(path), str(plan_path), Settings(requests=requests, seed=s))[:2] for s in range(3)]


def saturated_throughput_rps(out) -> float:
    """Completions per second while an overloaded deployment's queue grows: from the arrival
    of the request at 50 % to the last arrival (the fill-up before and the drain after,
    when fewer requests run, are left out)."""
    arrivals = np.sort(out.arrival_ns)
    start, end = arrivals[len(arrivals) // 2], arrivals[-1]
    done = np.count_nonzero((out.finish_ns >= start) & (out.finish_ns <= end))
    return done / ((end - start) * 1e-9)


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def compare(instance_path: str, requests: int, workdir: Path, time_limit_s: float = 30) -> list[dict]:
    """Rows of (instance, rate, utilisation, predicted and simulated figures, ratios)."""
    inst = load_model(instance_path, Instance, "instance")
    doc = json.loads(Path(instance_path).read_text())
    result = solve_service(inst, time_limit_s=time_limit_s)
    memory = peak_memory_bytes(inst, result.plan, result.chosen.knobs, result.load)
    plan_path = workdir / f"{inst.name}_plan.json"
    plan_path.write_text(dump(service_plan_to_json(result.plan, result.chosen, memory, result.status, {})))
    rep, knobs, load = chosen_replica(inst, result), result.chosen.knobs, result.load
    sustainable = result.chosen.sustainable_rps
    rates = sorted({f * sustainable for f in FRACTIONS}
                   | ({inst.workload.arrival_rate_rps} if inst.workload.arrival_rate_rps else set()))
    rows = []
    for rate in rates:
        m = predict(rep, knobs, load, rate)
        sims = simulate_at(doc, plan_path, rate, requests, workdir)
        sims = [summary for summary, _ in sims]
        ttft, tpot = median(sims, "ttft_p90_s"), median(sims, "tpot_p90_ms")
        rows.append({"instance": inst.name, "rate_rps": rate, "utilization": m.utilization,
                     "ttft_p90_pred_s": m.ttft_p90_s, "ttft_p90_sim_s": ttft, "ttft_ratio": m.ttft_p90_s / ttft,
                     "tpot_p90_pred_ms": m.tpot_p90_ms, "tpot_p90_sim_ms": tpot, "tpot_ratio": m.tpot_p90_ms / tpot})
    over = simulate_at(doc, plan_path, 1.5 * sustainable, max(6000, 4 * requests), workdir)
    simulated = statistics.median(saturated_throughput_rps(out) for _, out in over)
    rows.append({"instance": inst.name, "rate_rps": 1.5 * sustainable, "utilization": float("nan"),
                 "sustainable_pred_rps": sustainable, "sustainable_sim_rps": simulated,
                 "sustainable_ratio": sustainable / simulated})
    return rows


def print_rows(rows: list[dict]) -> None:
    head = f"{'instance':28s} {'rate':>9s} {'util':>5s} {'ttft90 pred':>11s} {'sim':>9s} {'ratio':>6s} " \
           f"{'tpot90 pred':>9s} {'sim':>8s} {'ratio':>6s}"
    print(head)
    for r in rows:
        if "sustainable_ratio" in r:
            print(f"{r['instance']:28s} sustainable rate: planner {r['sustainable_pred_rps']:.3f} rps, "
                  f"simulated {r['sustainable_sim_rps']:.3f} rps, ratio {r['sustainable_ratio']:.3f}")
            continue
        print(f"{r['instance']:28s} {r['rate_rps']:9.3f} {r['utilization']:5.2f} {r['ttft_p90_pred_s']:11.4f} "
              f"{r['ttft_p90_sim_s']:9.4f} {r['ttft_ratio']:6.3f} {r['tpot_p90_pred_ms']:9.3f} "
              f"{r['tpot_p90_sim_ms']:8.3f} {r['tpot_ratio']:6.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("instances", nargs="*", default=SHIPPED)
    ap.add_argument("--requests", type=int, default=1500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.instances:
            print_rows(compare(path, args.requests, Path(tmp)))


if __name__ == "__main__":
    main()
