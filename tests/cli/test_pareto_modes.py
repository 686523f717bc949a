"""``moeopt pareto --mode agg|disagg|auto``: the refusals (one stderr line, exit 2), and on a
tiny service the auto table: both modes' rows, ``pareto`` exactly the points meeting every
requirement that no such point of either mode beats in both figures (recomputed here)."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import INSTANCE as BATCH_INSTANCE
from tests.cli.test_cli import expect, invoke
from tests.search.test_disagg_front import tiny_front_doc

AUTO_COLUMNS = ["mode", "num_gpus", "pools", "tp", "pp", "dp", "ep", "etp", "max_running_requests",
                "prefill_chunk_tokens", "prefill_micro_batches", "decode_micro_batches",
                "output_tokens_per_s_per_gpu", "tokens_per_s_per_user", "goodput_rps", "goodput_rps_per_gpu",
                "ttft_p90_s", "tpot_ms", "tpot_bound_ms", "status", "gap", "feasible", "pareto"]


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_front_doc()))
    return path


def _one_line(res, *needles):
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1, res.stderr
    for needle in needles:
        assert needle in res.stderr


@pytest.mark.parametrize("mode", ["disagg", "auto"])
def test_a_static_batch_is_refused_in_one_line(mode):
    _one_line(expect(invoke("pareto", BATCH_INSTANCE, "--mode", mode), 2), f"--mode={mode}",
              "workload.kind='batch'")


def test_refusals_on_a_service(tiny, tmp_path):
    _one_line(expect(invoke("pareto", tiny, "--mode", "auto", "--backend", "ray"), 2), "--backend=ray")
    _one_line(expect(invoke("pareto", tiny, "--mode", "disagg", "--objective", "throughput"), 2),
              "--objective=throughput")
    _one_line(expect(invoke("pareto", tiny, "--tpot-levels", "3"), 2), "--tpot-levels=3", "--mode")
    _one_line(expect(invoke("pareto", tiny, "--mode", "disagg", "--gpus", "9"), 2), "--gpus=9")
    doc = tiny_front_doc()
    doc["requirements"]["max_e2e_latency_s"] = 5.0
    e2e = tmp_path / "e2e.json"
    e2e.write_text(json.dumps(doc))
    _one_line(expect(invoke("pareto", e2e, "--mode", "disagg"), 2), "requirements.max_e2e_latency_s")


@pytest.mark.slow
def test_auto_marks_the_combined_front(tiny, tmp_path):
    out = tmp_path / "front.json"
    res = expect(invoke("pareto", tiny, "--mode", "auto", "--tpot-levels", "3", "--format", "json",
                        "--time-limit", "600", "--output", out), 0)
    assert res.stdout == f"front written to {out}\n"
    rows = json.loads(out.read_text())
    assert rows and list(rows[0]) == AUTO_COLUMNS
    assert {r["mode"] for r in rows} == {"agg", "disagg"}
    for r in rows:
        if r["mode"] == "disagg":  # pools name both, replicas x GPUs summing to num_gpus
            pre, dec = r["pools"].split(" + ")
            sizes = [tuple(map(int, part.split()[0].split("x"))) for part in (pre, dec)]
            assert sum(n * g for n, g in sizes) == r["num_gpus"] <= 4
            assert r["status"] == "optimal" and r["gap"] == 0.0 and r["feasible"]
            assert r["tpot_ms"] <= r["tpot_bound_ms"] * (1 + 1e-9)  # the mean is below the p90 bound
        else:
            assert r["pools"] == f"1x{r['num_gpus']}" and type(r["tp"]) is int and r["status"] == "enumerated"
    ok = [r for r in rows if r["feasible"]]
    for r in rows:
        x, y = r["output_tokens_per_s_per_gpu"], r["tokens_per_s_per_user"]
        beaten = any(o["output_tokens_per_s_per_gpu"] >= x and o["tokens_per_s_per_user"] >= y
                     and (o["output_tokens_per_s_per_gpu"], o["tokens_per_s_per_user"]) != (x, y) for o in ok)
        assert r["pareto"] == (r["feasible"] and not beaten), r
    xs = [r["output_tokens_per_s_per_gpu"] for r in rows]
    assert xs == sorted(xs, reverse=True)
    # the agg rows are the agg front itself (--mode agg), marks aside
    agg = json.loads(expect(invoke("pareto", tiny, "--format", "json", "--time-limit", "600"), 0).stdout)
    shown = [{k: r[k] for k in agg[0] if k != "pareto"} for r in rows if r["mode"] == "agg"]
    assert shown == [{k: r[k] for k in r if k != "pareto"} for r in agg]
