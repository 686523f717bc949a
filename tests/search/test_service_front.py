"""``--objective`` on the service front (``moeopt pareto``) and the service sweep, checked
against brute force over every (configuration, knob tuple) of a tiny service: the front is
exactly the non-dominated set of all candidates' points, and each count's sweep row carries
the best figure any admissible candidate reaches."""

import functools
import json
import math

import pytest

from optimizer.costs.serving.metrics import predict
from optimizer.inputs.schema import Instance
from optimizer.search.service_pareto import service_pareto_table
from optimizer.search.service_sweep import service_sweep
from optimizer.search.sweep import with_gpus
from tests.cli.test_cli import INSTANCE as BATCH_INSTANCE
from tests.cli.test_cli import expect, invoke
from tests.oracles.tiny_service import TINY, TINY_SERVICE_GROUP, every_candidate


def _every_point(inst, objective):
    """(throughput per GPU, tokens/s per user) of every candidate at the objective's rate,
    computed here from the candidates' own figures (no pruning, no front code)."""
    return _points_on(inst.hardware.num_gpus, objective)


@functools.cache
def _points_on(gpus, objective):
    load, candidates = every_candidate(gpus)
    points = []
    for rep, c in candidates:
        rate = c.goodput_rps if objective == "goodput" else c.sustainable_rps
        m = c.at_goodput if objective == "goodput" else predict(rep, c.knobs, load, rate)
        points.append((rate * load.output_tokens / gpus, 1000.0 / m.tpot_ms, c))
    return points


def _brute_front(points):
    """Points no other point beats in both figures (>= in both, different), positive
    throughput, one per distinct pair."""
    front = {}
    for x, y, c in points:
        if x > 0 and not any(a >= x and b >= y and (a, b) != (x, y) for a, b, _ in points):
            front[(x, y)] = c
    return front


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["goodput", "throughput"])
@pytest.mark.xdist_group(TINY_SERVICE_GROUP)
def test_front_equals_brute_force(objective):
    inst = with_gpus(Instance.model_validate(TINY), 2)
    want = _brute_front(_every_point(inst, objective))
    table = service_pareto_table(inst, objective=objective, time_limit_s=600)
    assert table.attrs["unsolved"] == 0 and len(table) == len(want) > 1
    got = {(r.output_tokens_per_s_per_gpu, r.tokens_per_s_per_user) for r in table.itertuples()}
    assert got == set(want)
    assert list(table["output_tokens_per_s_per_gpu"]) == sorted(table["output_tokens_per_s_per_gpu"], reverse=True)


@pytest.mark.slow
@pytest.mark.xdist_group(TINY_SERVICE_GROUP)
def test_throughput_front_is_at_the_sustainable_rate():
    # throughput per GPU of a point = sustainable rate x output tokens / GPUs, at least the
    # goodput front's (goodput <= sustainable rate), and its best point is the best capacity
    inst = with_gpus(Instance.model_validate(TINY), 2)
    capacity = service_pareto_table(inst, objective="throughput", time_limit_s=600)
    good = service_pareto_table(inst, objective="goodput", time_limit_s=600)
    best = max(x for x, _, _ in _every_point(inst, "throughput"))
    assert capacity["output_tokens_per_s_per_gpu"].max() == pytest.approx(best, rel=1e-12)
    assert capacity["output_tokens_per_s_per_gpu"].max() >= good["output_tokens_per_s_per_gpu"].max()


@pytest.mark.xdist_group(TINY_SERVICE_GROUP)
def test_front_respects_the_time_limit(monkeypatch):
    # the budget's clock jumps past the deadline after it is set: one group is evaluated,
    # the others are counted unsolved, and every row shown is a real candidate's point
    from optimizer.cpsat import budget
    inst = with_gpus(Instance.model_validate(TINY), 2)
    every = {(x, y) for x, y, _ in _every_point(inst, "goodput")}
    times = iter([0.0] + [1000.0] * 10**6)
    monkeypatch.setattr(budget, "clock", lambda: next(times))
    table = service_pareto_table(inst, objective="goodput", time_limit_s=5)
    assert table.attrs["unsolved"] > 0
    assert {(r.output_tokens_per_s_per_gpu, r.tokens_per_s_per_user) for r in table.itertuples()} <= every


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["goodput", "throughput"])
@pytest.mark.xdist_group(TINY_SERVICE_GROUP)
def test_service_sweep_rows_equal_brute_force(objective):
    inst = Instance.model_validate(TINY)
    table = service_sweep(inst, [2, 4], objective, 600)
    assert list(table["num_gpus"]) == [2, 4]
    for row in table.itertuples():
        assert row.status == "optimal"
        cands = [c for _, _, c in _every_point(with_gpus(inst, row.num_gpus), objective) if c.meets_rate]
        figure = (lambda c: c.goodput_rps_per_gpu) if objective == "goodput" \
            else (lambda c: c.throughput_tokens_per_s_per_gpu)
        best = max(figure(c) for c in cands)
        got = row.goodput_rps_per_gpu if objective == "goodput" else row.max_output_tokens_per_s_per_gpu
        # the CP-SAT scores are integers (micro-requests/s, milli-tokens/s): equal to their grain
        assert got == pytest.approx(best, abs=1e-6 * row.num_gpus + 1e-3)
        assert row.meets_requirements and math.isfinite(row.ttft_s) and row.tpot_ms > 0


def test_objective_flags_exit_2(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    for args, start in ((("pareto", path, "--objective", "lost-time"), "moeopt: --objective=lost-time"),
                        (("pareto", BATCH_INSTANCE, "--objective", "goodput"), "moeopt: --objective=goodput"),
                        (("sweep", BATCH_INSTANCE, "--gpus", "8", "--objective", "throughput"),
                         "moeopt: --objective=throughput"),
                        (("sweep", path, "--gpus", "4", "--objective", "lost-time"), "moeopt: --objective=lost-time"),
                        (("sweep", path, "--gpus", "4", "--resume"), "moeopt: --resume")):
        res = expect(invoke(*args), 2)
        assert res.stderr.startswith(start) and len(res.stderr.splitlines()) == 1


@pytest.mark.slow
def test_cli_service_sweep_writes_its_table(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    out = tmp_path / "sw"
    res = expect(invoke("sweep", path, "--gpus", "2,4", "--objective", "throughput", "--output", out), 0)
    assert "Best service plan per GPU count (objective throughput)" in res.stdout
    import pandas as pd
    table = pd.read_csv(out / "sweep-summary.csv")
    assert list(table["num_gpus"]) == [2, 4] and table["max_output_tokens_per_s_per_gpu"].min() > 0
