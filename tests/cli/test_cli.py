"""End-to-end tests of the moeopt CLI against the contract in docs/interface.md.

Every command runs in-process through click's CliRunner (click >= 8.2: ``result.stdout``,
``result.stderr`` and the interleaved ``result.output`` are separate). Exit codes are
asserted exactly; on failure the assertion message shows what the command printed.
Each test runs in its own temporary working directory so that nothing lands in the
repository's ``results/``.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from optimizer.cli import main

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"
PER_GPU = REPO / "instances" / "10b_moe_per_gpu.json"

DEGREE_KEYS = {"tp", "pp", "dp", "ep", "etp", "edp"}
GPU_KEYS = {"rank", "node", "local_rank", "stage", "tp_rank", "dp_rank", "ep_rank", "memory_gb"}
MEMORY_KEYS = {"weights", "kv_cache", "activations", "buffers", "total"}
METRIC_KEYS = {"throughput_tokens_per_ms", "throughput_tokens_per_ms_per_gpu", "ttft_s",
               "max_memory_gb", "load_imbalance", "communication_ms"}
SOLVER_KEYS = {"status", "objective", "bound", "gap", "wall_s"}
PLAN_KEYS = {"schema_version", "instance", "status", "num_gpus", "degrees", "micro_batches",
             "stages", "expert_placement", "gpus", "metrics", "solver"}
CHECK_ENTRY_KEYS = {"name", "value", "limit", "unit", "ok"}
NO_PLAN_KEYS = {"schema_version", "instance", "status", "explanation", "conflicts", "bounds"}


def runner() -> CliRunner:
    """A runner with stdout and stderr apart (click 8.1 needs mix_stderr=False; 8.2+ always)."""
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def invoke(*args: str):
    return runner().invoke(main, [str(a) for a in args])


def shown(res) -> str:
    """Everything a command printed, for assertion messages."""
    exc = f"\nexception: {res.exception!r}" if res.exception and not isinstance(res.exception, SystemExit) else ""
    return f"exit {res.exit_code}\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}{exc}"


def expect(res, code: int):
    assert res.exit_code == code, shown(res)
    return res


def without_wall_s(text: str) -> str:
    """A plan's JSON text with the solver's (only non-deterministic) "wall_s" line removed."""
    out, n = re.subn(r'^\s*"wall_s": [^\n]*\n', "", text, flags=re.M)
    assert n == 1, f"expected exactly one wall_s line, found {n}"
    return out


@pytest.fixture(autouse=True)
def _own_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def instance_doc() -> dict:
    return json.loads(INSTANCE.read_text())


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    """One `moeopt solve` of the 10B instance (table format) with --output: (result, plan path)."""
    out_dir = tmp_path_factory.mktemp("solved")
    target = out_dir / "plan.json"
    res = invoke("solve", INSTANCE, "--output", target)
    return res, target


# ---------------------------------------------------------------------------------- solve


def test_solve_exits_0_and_writes_only_the_plan(solved):
    res, target = solved
    expect(res, 0)
    assert target.is_file(), shown(res)
    json.loads(target.read_text())
    # Atomic write: no temporary file left beside the plan.
    assert sorted(p.name for p in target.parent.iterdir()) == ["plan.json"]
    assert res.stderr == "", shown(res)


def test_plan_has_every_required_key(solved, instance_doc):
    plan = json.loads(solved[1].read_text())
    assert PLAN_KEYS <= plan.keys(), PLAN_KEYS - plan.keys()
    assert isinstance(plan["schema_version"], int) and not isinstance(plan["schema_version"], bool)
    assert plan["instance"] == instance_doc["name"] == "10b_moe"
    assert plan["status"] in ("optimal", "feasible")
    assert isinstance(plan["num_gpus"], int) and plan["num_gpus"] >= 1
    assert DEGREE_KEYS <= plan["degrees"].keys()
    assert all(isinstance(plan["degrees"][k], int) and plan["degrees"][k] >= 1 for k in DEGREE_KEYS)
    assert isinstance(plan["micro_batches"], int) and plan["micro_batches"] >= 1
    assert plan["gpus"], "no gpus"
    for g in plan["gpus"]:
        assert GPU_KEYS <= g.keys(), GPU_KEYS - g.keys()
        assert MEMORY_KEYS <= g["memory_gb"].keys(), MEMORY_KEYS - g["memory_gb"].keys()
    assert METRIC_KEYS <= plan["metrics"].keys(), METRIC_KEYS - plan["metrics"].keys()
    assert SOLVER_KEYS <= plan["solver"].keys(), SOLVER_KEYS - plan["solver"].keys()
    for key in METRIC_KEYS:
        value = plan["metrics"][key]
        assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)


def test_plan_degree_identities(solved, instance_doc):
    plan = json.loads(solved[1].read_text())
    d, n = plan["degrees"], plan["num_gpus"]
    assert d["tp"] * d["pp"] * d["dp"] == n == d["etp"] * d["ep"] * d["edp"] * d["pp"], d
    assert n <= instance_doc["hardware"]["num_gpus"]
    model = instance_doc["model"]
    assert model["num_attention_heads"] % d["tp"] == 0
    assert model["num_experts"] % d["ep"] == 0
    assert d["pp"] <= model["num_layers"]


def test_plan_stages_are_contiguous_and_cover_every_layer_once(solved, instance_doc):
    plan = json.loads(solved[1].read_text())
    num_layers = instance_doc["model"]["num_layers"]
    stages = plan["stages"]
    assert [s["stage"] for s in stages] == list(range(plan["degrees"]["pp"])), stages
    flat = []
    for s in stages:
        layers = s["layers"]
        assert layers, f"stage {s['stage']} is empty"
        assert layers == list(range(layers[0], layers[0] + len(layers))), f"stage {s['stage']}: {layers}"
        flat += layers
    assert flat == list(range(num_layers)), flat


def test_plan_expert_placement_covers_every_expert_once_per_layer(solved, instance_doc):
    plan = json.loads(solved[1].read_text())
    model = instance_doc["model"]
    placement = plan["expert_placement"]
    # Every layer of the model is an MoE layer: one entry per layer.
    assert set(placement) == {str(layer) for layer in range(model["num_layers"])}, sorted(placement)
    for layer, ranks in placement.items():
        assert len(ranks) == plan["degrees"]["ep"], (layer, len(ranks))
        assert sorted(e for r in ranks for e in r) == list(range(model["num_experts"])), (layer, ranks)


def test_plan_gpus_are_consistent(solved, instance_doc):
    plan = json.loads(solved[1].read_text())
    d, hw = plan["degrees"], instance_doc["hardware"]
    gpus = plan["gpus"]
    assert sorted(g["rank"] for g in gpus) == list(range(plan["num_gpus"]))
    for g in gpus:
        assert 0 <= g["stage"] < d["pp"] and 0 <= g["tp_rank"] < d["tp"], g
        assert 0 <= g["dp_rank"] < d["dp"] and 0 <= g["ep_rank"] < d["ep"], g
        assert 0 <= g["local_rank"] < hw["gpus_per_node"], g
        mem = g["memory_gb"]
        parts = mem["weights"] + mem["kv_cache"] + mem["activations"] + mem["buffers"]
        assert mem["total"] == pytest.approx(parts, rel=1e-9), mem
        assert mem["total"] <= instance_doc["requirements"]["max_memory_gb"], mem
    assert len({(g["stage"], g["tp_rank"], g["dp_rank"]) for g in gpus}) == plan["num_gpus"]
    assert plan["metrics"]["max_memory_gb"] == pytest.approx(max(g["memory_gb"]["total"] for g in gpus))


def test_plan_metrics_and_solver_meet_the_requirements(solved, instance_doc):
    plan = json.loads(solved[1].read_text())
    m, req = plan["metrics"], instance_doc["requirements"]
    assert m["throughput_tokens_per_ms_per_gpu"] == pytest.approx(
        m["throughput_tokens_per_ms"] / plan["num_gpus"])
    assert m["throughput_tokens_per_ms"] >= req["min_throughput_tokens_per_ms"]
    assert 0 < m["ttft_s"] < req["max_ttft_s"]
    assert m["load_imbalance"] >= 0 and m["communication_ms"] >= 0
    s = plan["solver"]
    assert s["status"] == plan["status"] == "optimal"
    assert s["gap"] == 0 and s["objective"] == pytest.approx(s["bound"])
    assert s["wall_s"] >= 0


def test_solve_table_names_the_degrees_and_says_optimal(solved):
    res, target = solved
    expect(res, 0)
    d = json.loads(target.read_text())["degrees"]
    for key in ("tp", "pp", "dp", "ep", "etp", "edp"):
        assert re.search(rf"\b{key.upper()} {d[key]}\b", res.stdout), (key, d[key], res.stdout[:400])
    assert "optimal" in res.stdout
    assert str(target) in res.stdout  # "plan written to <path>"


def test_solve_without_output_writes_results_dir(tmp_path):
    res = expect(invoke("solve", INSTANCE), 0)
    target = tmp_path / "results" / "10b_moe" / "plan.json"
    assert target.is_file(), shown(res)
    assert json.loads(target.read_text())["instance"] == "10b_moe"


def test_solve_format_json_equals_the_file(tmp_path):
    target = tmp_path / "out" / "plan.json"
    res = expect(invoke("solve", INSTANCE, "--format", "json", "--output", target), 0)
    doc = json.loads(res.stdout)  # the whole of stdout is one JSON document
    assert doc == json.loads(target.read_text())
    assert res.stdout == target.read_text()
    assert PLAN_KEYS <= doc.keys()


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_solve_output_dash_prints_json_and_writes_nothing(tmp_path, fmt):
    res = expect(invoke("solve", INSTANCE, "--format", fmt, "--output", "-"), 0)
    doc = json.loads(res.stdout)
    assert PLAN_KEYS <= doc.keys()
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_solve_is_deterministic(solved, tmp_path):
    again = tmp_path / "again.json"
    expect(invoke("solve", INSTANCE, "--output", again), 0)
    first = solved[1].read_bytes().decode()
    second = again.read_bytes().decode()
    assert without_wall_s(first) == without_wall_s(second)


# ---------------------------------------------------------------------------------- check


def test_check_own_plan_table(solved):
    res = expect(invoke("check", INSTANCE, solved[1]), 0)
    assert "VIOLATED" not in res.stdout
    assert "feasible" in res.stdout


def test_check_own_plan_json(solved):
    plan = json.loads(solved[1].read_text())
    res = expect(invoke("check", INSTANCE, solved[1], "--format", "json"), 0)
    doc = json.loads(res.stdout)
    assert {"feasible", "checks", "metrics"} <= doc.keys()
    assert doc["feasible"] is True
    assert doc["checks"], "no checks"
    for c in doc["checks"]:
        assert CHECK_ENTRY_KEYS <= c.keys(), c
        assert c["ok"] is True, c
    assert doc["metrics"].keys() == plan["metrics"].keys()
    for key in METRIC_KEYS:  # recomputed from the plan alone, equal to what solve reported
        assert doc["metrics"][key] == pytest.approx(plan["metrics"][key], rel=1e-9, abs=1e-12), key


def test_check_exits_3_when_a_requirement_fails(solved):
    """The 10b_moe plan reaches ~35 tokens/ms per GPU, the per_gpu instance asks 100."""
    res = expect(invoke("check", PER_GPU, solved[1], "--format", "json"), 3)
    doc = json.loads(res.stdout)
    assert doc["feasible"] is False
    failed = [c["name"] for c in doc["checks"] if not c["ok"]]
    assert failed == ["throughput"], failed


# ---------------------------------------------------------------------------------- infeasible


@pytest.mark.slow
def test_solve_per_gpu_is_infeasible_and_names_the_bound(tmp_path):
    res = expect(invoke("solve", PER_GPU, "--output", tmp_path / "plan.json"), 3)
    assert "throughput" in res.stderr and "70.9" in res.stderr, shown(res)
    assert "Traceback" not in res.output
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.slow
def test_solve_per_gpu_json_is_one_object(tmp_path):
    res = expect(invoke("solve", PER_GPU, "--format", "json", "--output", tmp_path / "plan.json"), 3)
    doc = json.loads(res.stdout)  # exactly one JSON document on stdout
    assert NO_PLAN_KEYS <= doc.keys(), NO_PLAN_KEYS - doc.keys()
    assert doc["schema_version"] == 1
    assert doc["instance"] == "10b_moe_per_gpu"
    assert doc["status"] == "infeasible"
    assert doc["conflicts"] == ["throughput"]
    assert "throughput" in doc["explanation"] and "70.9" in doc["explanation"]
    bounds = doc["bounds"]
    assert isinstance(bounds, dict) and bounds
    numbers = [v for v in bounds.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    # The per-GPU cap of 70.9 tokens/ms (deployment cap / 64 GPUs) is among the bounds.
    assert any(round(v, 1) == 70.9 or round(v / 64, 1) == 70.9 for v in numbers), bounds
    assert not (tmp_path / "plan.json").exists()


# ---------------------------------------------------------------------------------- schema


@pytest.mark.parametrize("what, keys", [
    ("instance", {"name", "model", "hardware", "workload", "requirements", "expert_load", "search"}),
    ("plan", {"degrees", "stages", "expert_placement", "gpus", "micro_batches"}),
])
def test_schema_prints_a_json_schema(what, keys):
    res = expect(invoke("schema", what), 0)
    doc = json.loads(res.stdout)
    assert doc.get("type") == "object", doc.get("type")
    assert keys <= doc["properties"].keys(), keys - doc["properties"].keys()


def _schemas_and_docs(solved):
    inst_schema = json.loads(expect(invoke("schema", "instance"), 0).stdout)
    plan_schema = json.loads(expect(invoke("schema", "plan"), 0).stdout)
    docs = [(inst_schema, json.loads(p.read_text())) for p in (INSTANCE, PER_GPU)]
    return docs + [(plan_schema, json.loads(solved[1].read_text()))]


def test_schema_required_keys_are_in_the_files(solved):
    for schema, doc in _schemas_and_docs(solved):
        assert set(schema.get("required", [])) <= doc.keys(), set(schema.get("required", [])) - doc.keys()
    inst_schema = _schemas_and_docs(solved)[0][0]
    # Unknown keys are rejected (interface: a typo never falls back to a default).
    assert inst_schema.get("additionalProperties") is False


def test_schemas_accept_the_files_they_describe(solved):
    jsonschema = pytest.importorskip("jsonschema")  # not a declared dependency: optional
    for schema, doc in _schemas_and_docs(solved):
        jsonschema.validate(doc, schema)
