"""The planner's service predictions against the discrete-event simulator (``moeopt
simulate``), which shares only the engine-step time with it: on 10b_moe_service, the
planner's p90 TTFT within 15 %, TPOT within 5 % and sustainable rate within 10 % of the
simulation's (median over 3 seeds) at the instance's rate (utilisation <= 85 %)."""

import json
import statistics

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


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "known gap: at 5 % utilisation the simulator's least-loaded router sends prompts to idle "
    "replicas, so decodes almost never share a step with a prompt (sim TPOT 2.8 ms); the "
    "planner charges every replica its share rho of prompt steps (3.5 ms, +24 %). TTFT agrees "
    "within 1 %. See docs/serving-model.md, Known weaknesses."))
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
    assert _median(sims, "tpot_p90_ms") == pytest.approx(planned.tpot_ms, rel=0.05)
    # sustainable rate: the simulation's throughput when offered 1.5x the planner's figure
    over = json.loads(open(INSTANCE).read())
    over["workload"]["arrival_rate_rps"] = 1.5 * result.chosen.sustainable_rps
    over_path = tmp_path / "overload.json"
    over_path.write_text(json.dumps(over))
    saturated = [run(str(over_path), str(plan_path), Settings(requests=3000, seed=seed))[0]
                 for seed in range(3)]
    assert _median(saturated, "throughput_rps") == pytest.approx(result.chosen.sustainable_rps, rel=0.10)
