"""The planner's service predictions against the discrete-event simulator (``moeopt
simulate``), which shares only the engine-step time with it: on 10b_moe_service, the
planner's p90 TTFT within 15 % and p90 TPOT within 5 % of the simulation's (median over 3
seeds) at the instance's rate (utilisation <= 85 %), and its sustainable rate within 10 % of
the simulated deployment's completion rate while overloaded (1.5x that rate)."""

import json
import statistics

import numpy as np
import pytest

from optimizer.cli.common import dump
from optimizer.cpsat.service_solve import solve_service
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.plan.service import peak_memory_bytes, service_plan_to_json
from optimizer.simulate.run import Settings, run

INSTANCE = "instances/10b_moe_service.json"


def _median(summaries, key):
    return statistics.median(s[key] for s in summaries)


def _saturated_rps(out) -> float:
    """Completions per second from the arrival at 50 % to the last arrival: the queue grows
    all along, so every replica runs at capacity (fill-up and drain left out)."""
    arrivals = np.sort(out.arrival_ns)
    start, end = arrivals[len(arrivals) // 2], arrivals[-1]
    done = np.count_nonzero((out.finish_ns >= start) & (out.finish_ns <= end))
    return done / ((end - start) * 1e-9)


@pytest.mark.slow
def test_planner_against_simulation(tmp_path):
    inst = load_model(INSTANCE, Instance, "instance")
    result = solve_service(inst, time_limit_s=60)
    memory = peak_memory_bytes(inst, result.plan, result.chosen.knobs, result.load)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(dump(service_plan_to_json(result.plan, result.chosen, memory, result.status, {})))
    planned = result.chosen.at_rate
    assert planned.utilization <= 0.85
    sims = [run(INSTANCE, str(plan_path), Settings(requests=1500, seed=seed))[0] for seed in range(3)]
    assert _median(sims, "ttft_p90_s") == pytest.approx(planned.ttft_p90_s, rel=0.15)
    assert _median(sims, "tpot_p90_ms") == pytest.approx(planned.tpot_p90_ms, rel=0.05)
    # sustainable rate: the simulated completion rate while offered 1.5x the planner's figure
    over = json.loads(open(INSTANCE).read())
    over["workload"]["arrival_rate_rps"] = 1.5 * result.chosen.sustainable_rps
    over_path = tmp_path / "overload.json"
    over_path.write_text(json.dumps(over))
    saturated = [_saturated_rps(run(str(over_path), str(plan_path), Settings(requests=6000, seed=seed))[1])
                 for seed in range(3)]
    assert statistics.median(saturated) == pytest.approx(result.chosen.sustainable_rps, rel=0.10)
