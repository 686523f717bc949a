"""``moeopt solve --log-solver`` and ``--dump-model FILE``: one flag away from CP-SAT's own
account of a plan.

- ``--log-solver``: CP-SAT's search log goes to stderr; stdout stays the plan (parseable).
- ``--dump-model FILE``: the phase-1 model in protobuf text format, written atomically; it
  parses back into a CpModelProto, and CP-SAT solves it to the same primary objective the
  plan reports (when the plan is proven optimal).
"""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import text_format
from ortools.sat import cp_model_pb2
from ortools.sat.python import cp_model

from tests.cpsat.test_edges import tiny
from tests.oracles import fuzzkit


def tiny_instance(folder: Path) -> Path:
    path = folder / "tiny.json"
    path.write_text(json.dumps(tiny(8)))
    return path


def test_log_solver_writes_the_search_log_to_stderr_only(tmp_path):
    path = tiny_instance(tmp_path)
    out = fuzzkit.invoke(["solve", str(path), "--log-solver", "--format", "json", "--output", "-",
                          "--workers", "1"], tmp_path)
    assert out.code == 0, out.stderr[-2000:]
    assert "Starting CP-SAT solver" in out.stderr
    assert "CpSolverResponse summary" in out.stderr
    assert json.loads(out.stdout)["status"] in ("optimal", "feasible")  # nothing else on stdout
    quiet = fuzzkit.invoke(["solve", str(path), "--format", "json", "--output", "-", "--workers", "1"], tmp_path)
    assert "CP-SAT" not in quiet.stderr  # without the flag: no log
    assert json.loads(quiet.stdout)["degrees"] == json.loads(out.stdout)["degrees"]


def test_dump_model_writes_the_phase_one_model(tmp_path):
    path = tiny_instance(tmp_path)
    dump = tmp_path / "debug" / "model.pbtxt"  # a folder that does not exist yet
    out = fuzzkit.invoke(["solve", str(path), "--dump-model", str(dump), "--format", "json", "--output", "-",
                          "--workers", "1"], tmp_path)
    assert out.code == 0, out.stderr[-2000:]
    plan = json.loads(out.stdout)
    proto = text_format.Parse(dump.read_text(), cp_model_pb2.CpModelProto())
    names = {var.name for var in proto.variables}
    assert {"objective_ns", "ttft_ns", "require_memory"} <= names
    assert proto.HasField("objective")
    assert not list(dump.parent.glob(".*.tmp"))  # atomic: no temporary left behind
    model = cp_model.CpModel()
    model.proto.parse_text_format(dump.read_text())  # CP-SAT's own reader, too
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    assert solver.solve(model) == cp_model.OPTIMAL
    if plan["solver"]["status"] == "optimal":  # reported objective in ms, the model's in ns
        assert round(solver.objective_value) == round(plan["solver"]["objective"] * 1e6)


def test_dump_model_to_a_folder_is_one_line_exit_2(tmp_path):
    path = tiny_instance(tmp_path)
    out = fuzzkit.invoke(["solve", str(path), "--dump-model", str(tmp_path), "--output", str(tmp_path / "p.json")],
                         tmp_path)
    assert out.code == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "--dump-model=" in out.stderr
    assert not (tmp_path / "p.json").exists()  # refused before any plan was written
