"""``moeopt sweep --mode agg|disagg|auto`` on a service: every row is what ``moeopt solve
--mode X --gpus N`` gives for that count (same goodput, same pools and degrees), auto marks the
row of higher goodput per GPU; a static batch with disagg/auto exits 2 in one line."""

import json

import pandas as pd
import pytest

from tests.cli.test_cli import INSTANCE as BATCH_INSTANCE
from tests.cli.test_cli import expect, invoke
from tests.cpsat.test_disagg_model import tiny_disagg


def _degrees(d: dict) -> str:
    return f"tp{d['tp']} pp{d['pp']} dp{d['dp']} ep{d['ep']} etp{d['etp']} edp{d['edp']}"


def _solved(path, mode: str, gpus: int) -> dict:
    res = expect(invoke("solve", path, "--mode", mode, "--gpus", gpus, "--format", "json", "--output", "-"), 0)
    return json.loads(res.stdout)


@pytest.mark.slow
def test_auto_sweep_rows_equal_solve_per_mode(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_disagg()))
    out = tmp_path / "sw"
    res = expect(invoke("sweep", path, "--gpus", "4,8", "--mode", "auto", "--output", out), 0)
    assert "mode auto" in res.stdout
    table = pd.read_csv(out / "sweep-summary.csv")
    assert list(zip(table["num_gpus"], table["mode"])) == [(4, "agg"), (4, "disagg"), (8, "agg"), (8, "disagg")]
    for gpus in (4, 8):
        rows = table[table["num_gpus"] == gpus].set_index("mode")
        agg, dis = _solved(path, "agg", gpus), _solved(path, "disagg", gpus)
        assert rows.loc["agg", "goodput_rps"] == pytest.approx(agg["metrics"]["goodput_rps"], rel=1e-9)
        assert rows.loc["agg", "degrees"] == _degrees(agg["degrees"])
        assert rows.loc["agg", "pools"] == f"1x{agg['num_gpus']}"
        assert rows.loc["disagg", "goodput_rps"] == pytest.approx(dis["metrics"]["goodput_rps"], rel=1e-9)
        assert rows.loc["disagg", "goodput_rps_per_gpu"] == pytest.approx(
            dis["metrics"]["goodput_rps_per_gpu"], rel=1e-9)
        assert rows.loc["disagg", "pools"] == " + ".join(
            f"{p['replicas']}x{p['num_gpus']} {p['role']}" for p in dis["pools"])
        assert rows.loc["disagg", "degrees"] == " | ".join(
            f"{p['role']} {_degrees(p['degrees'])}" for p in dis["pools"])
        # exactly one row chosen: the higher goodput per GPU (agg on a tie, as solve --mode auto)
        better = "disagg" if dis["metrics"]["goodput_rps_per_gpu"] > agg["metrics"]["goodput_rps_per_gpu"] else "agg"
        assert list(rows.index[rows["chosen"].astype(bool)]) == [better]
        auto = _solved(path, "auto", gpus)
        assert auto["solver"]["auto"]["chosen"] == better


@pytest.mark.slow
def test_disagg_sweep_has_one_row_per_count(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_disagg()))
    res = expect(invoke("sweep", path, "--gpus", "4", "--mode", "disagg", "--format", "csv"), 0)
    from io import StringIO
    table = pd.read_csv(StringIO(res.stdout))
    assert list(table["mode"]) == ["disagg"] and bool(table["chosen"].iloc[0])
    assert table["pools"].iloc[0].endswith(" decode") and " prefill + " in table["pools"].iloc[0]


def test_batch_with_disagg_modes_exits_2():
    for mode in ("disagg", "auto"):
        res = expect(invoke("sweep", BATCH_INSTANCE, "--gpus", "8", "--mode", mode), 2)
        assert res.stderr.startswith(f"moeopt: --mode={mode}") and len(res.stderr.splitlines()) == 1


def test_e2e_limit_with_disagg_exits_2(tmp_path):
    doc = tiny_disagg()
    doc["requirements"]["max_e2e_latency_s"] = 5.0
    path = tmp_path / "e2e.json"
    path.write_text(json.dumps(doc))
    res = expect(invoke("sweep", path, "--gpus", "4", "--mode", "disagg"), 2)
    assert res.stderr.startswith("moeopt: requirements.max_e2e_latency_s") and len(res.stderr.splitlines()) == 1
