"""Every file moeopt reads is written by a stranger: regression tests for inputs that used to
end in exit 1 (an internal error), eat memory, write outside the folder the user named, or
print terminal escapes. Each must now be one line on stderr naming the field and the rule,
exit 2 (or, for a damaged sweep point, a recomputed point).
"""

from __future__ import annotations

import copy
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from optimizer.errors import InputError
from optimizer.inputs import files
from optimizer.inputs.files import MAX_INT_DIGITS, MAX_JSON_DEPTH, parse_json
from optimizer.inputs.names import Label, ResultName
from optimizer.inputs.schema import MAX_EXPERTS, MAX_HEADS, MAX_LAYERS
from tests.cli.test_bad_input import assert_one_line_error, invoke, shown

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"
SEED_PLAN = REPO / "instances" / "seed_plan.json"
HF_DIR = REPO / "tests" / "fixtures" / "hf"
MIXTRAL = HF_DIR / "mixtral_8x7b.json"
BASE = json.loads(INSTANCE.read_text())


@pytest.fixture(autouse=True)
def _own_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


# ------------------------------------------------------------------ the JSON reader's rules

@pytest.mark.parametrize("text, expected", [
    (nested(1000), f"nested more than {MAX_JSON_DEPTH} levels deep"),
    (nested(MAX_JSON_DEPTH + 1), f"nested more than {MAX_JSON_DEPTH} levels deep"),
    ('{"a": [1, {"b": -' + "9" * 401 + "}]}", "a.1.b=-9999999999999999999...: an integer of 401 digits; at most 30"),
    ('{"n": ' + "1" * (MAX_INT_DIGITS + 1) + "}", f"n={'1' * 20}...: an integer of {MAX_INT_DIGITS + 1} digits"),
    ('{"name": "\\ud800"}', "name='\\ud800': holds a lone UTF-16 surrogate"),
    ('{"x": {"\\udfff": 1}}', "x.\\udfff='\\udfff': holds a lone UTF-16 surrogate"),
    ('{"name": "a", "top_k": 2, "name": "b"}', "the key 'name' appears twice in one object"),
    ("[NaN]", "NaN is not a number JSON allows"),
])
def test_read_json_refuses_hostile_text(text, expected):
    with pytest.raises(InputError) as caught:
        parse_json(text, "instance f.json")
    assert str(caught.value).startswith("instance f.json: ")
    assert expected in str(caught.value)


def test_read_json_accepts_the_edges():
    # exactly MAX_JSON_DEPTH arrays around 1; brackets inside strings are not nesting
    assert parse_json(nested(MAX_JSON_DEPTH), "f") == json.loads(nested(MAX_JSON_DEPTH))
    assert parse_json('{"a": "[[[[\\"]]{{"}', "f") == {"a": '[[[["]]{{'}
    big = "9" * MAX_INT_DIGITS
    assert parse_json(f"[{big}, -{big}]", "f") == [int(big), -int(big)]
    assert parse_json('["\\ud83d\\ude00"]', "f") == ["\U0001F600"]  # a surrogate *pair* is one character


def test_the_slow_checks_run_only_on_suspicious_text(monkeypatch):
    """A per-value walk over a 1024 x 4096 load table took 11 s; plain numbers skip it."""
    walked = []
    monkeypatch.setattr(files, "_refuse_odd_leaves", lambda doc, where: walked.append(doc))
    table = json.dumps({"logical_count": [[7] * 64 for _ in range(4)], "name": "\u00e9t\u00e9"})
    assert parse_json(table, "f")["logical_count"][3][63] == 7
    assert walked == []
    parse_json('{"a": "\\ud800"}', "f")  # a surrogate escape (here a lone one): walked
    parse_json('{"a": "' + "1" * 31 + '"}', "f")  # 31 digits, even in a string: walked
    assert len(walked) == 2


def test_read_text_caps_the_file_size(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    ok, big = tmp_path / "ok.json", tmp_path / "big.json"
    ok.write_text("[" + " " * 98 + "]")      # 100 bytes: read
    big.write_text("[" + " " * 99 + "]")     # 101 bytes: refused
    assert files.read_json(ok, "instance") == []
    with pytest.raises(InputError, match="larger than 100 bytes, the most moeopt reads"):
        files.read_json(big, "instance")


# ------------------------------------------------------------------ every reader, every command

def _reader_commands(tmp: Path, bad: Path) -> dict[str, list]:
    """Every command that reads a JSON file, with ``bad`` in the place of that file."""
    out = tmp / "out"
    return {
        "solve": ["solve", bad, "--output", out / "p.json", "--time-limit", "1"],
        "check-instance": ["check", bad, SEED_PLAN],
        "check-plan": ["check", INSTANCE, bad],
        "inspect": ["inspect", bad],
        "init": ["init", "--model", bad, "--gpu", "h100-sxm", "--gpus", "8", "--output", out / "i.json"],
        "import-hf": ["import-hf", bad],
        "report-plan": ["report", bad, "--output", out / "r.html"],
        "report-instance": ["report", SEED_PLAN, "--instance", bad, "--output", out / "r.html"],
        "export": ["export", bad, "--to", "csv", "--output", out / "e"],
        "place-loads": ["place", "--loads", bad, "--ep", "2", "--time-limit", "1"],
        "pareto": ["pareto", bad, "--gpus", "8", "--time-limit", "1"],
    }


@pytest.mark.parametrize("attack, text, expected", [
    ("deep", nested(1000), "nested more than"),
    ("surrogate", json.dumps(BASE).replace('"10b_moe"', '"\\ud800"', 1), "lone UTF-16 surrogate"),
    ("digits", json.dumps(BASE).replace('"num_layers": 16', '"num_layers": ' + "7" * 401), "401 digits"),
    ("duplicate", json.dumps(BASE).replace('"name": "10b_moe"', '"name": "a", "name": "b"', 1), "appears twice"),
])
def test_every_reader_refuses_hostile_json_in_one_line(tmp_path, attack, text, expected):
    assert text != json.dumps(BASE) or attack == "deep"
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    for name, args in _reader_commands(tmp_path, bad).items():
        res = invoke(*args)
        assert_one_line_error(res, expected)
        assert str(bad) in res.stderr, f"{name}: {res.stderr}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("point", [nested(1000), '{"num_gpus": ' + "8" * 401 + "}",
                                   '{"num_gpus": 8, "num_gpus": 8}', '{"s": "\\ud800"}'])
def test_sweep_resume_recomputes_a_hostile_point(tmp_path, point):
    out = tmp_path / "sweep"
    path = out / "sweep-points" / "8.json"
    path.parent.mkdir(parents=True)
    path.write_text(point)
    res = invoke("sweep", INSTANCE, "--gpus", "8", "--resume", "--output", out, "--time-limit", "5",
                 "--format", "json")
    assert res.exit_code == 0, shown(res)
    assert json.loads(path.read_text())["num_gpus"] == 8  # computed again, then written whole
    assert {row["num_gpus"] for row in json.loads(res.stdout)} == {8}


# ------------------------------------------------------------------ output paths

def _writer_commands(output: str) -> dict[str, list]:
    return {
        "solve": ["solve", INSTANCE, "--time-limit", "1", "--output", output],
        "report": ["report", SEED_PLAN, "--output", output],
        "pareto": ["pareto", INSTANCE, "--gpus", "8", "--time-limit", "1", "--output", output],
        "sweep": ["sweep", INSTANCE, "--gpus", "8", "--time-limit", "1", "--output", output],
        "init": ["init", "--model", MIXTRAL, "--gpu", "h100-sxm", "--gpus", "8", "--output", output],
        "import-hf": ["import-hf", MIXTRAL, "--output", output],
        "place": ["place", INSTANCE, "--time-limit", "1", "--output", output],
        "export": ["export", SEED_PLAN, "--to", "csv", "--instance", INSTANCE, "--output", output],
    }


def test_a_300_byte_output_name_is_exit_2_for_every_writing_command(tmp_path):
    name = "a" * 300 + ".json"
    for command, args in _writer_commands(name).items():
        res = invoke(*args)
        assert_one_line_error(res, "output")  # place and export write_atomic it as "output"
        assert "name of 305 bytes; at most 241" in res.stderr, f"{command}: {res.stderr}"
    assert list(tmp_path.iterdir()) == []


def test_an_output_name_just_short_enough_is_written(tmp_path):
    # 241 bytes + the temporary file's 14 ("." + name + "." + 8 random + ".tmp") = 255 = NAME_MAX
    name = "b" * 236 + ".json"
    res = invoke("import-hf", MIXTRAL, "--output", name)
    assert res.exit_code == 0, shown(res)
    assert json.loads((tmp_path / name).read_text())["num_layers"] == 32


def test_an_empty_output_is_exit_2_not_the_default_path(tmp_path):
    for command in ("solve", "report", "pareto", "sweep", "init", "import-hf"):
        res = invoke(*_writer_commands("")[command])
        assert_one_line_error(res, "--output")
        assert "is empty" in res.stderr, f"{command}: {res.stderr}"
    assert list(tmp_path.iterdir()) == []  # no results/10b_moe/plan.json or the like


def test_a_control_character_in_output_is_exit_2(tmp_path):
    res = invoke(*_writer_commands("a\x1b[2Jb.json")["init"])
    assert_one_line_error(res, "--output")
    assert "\x1b" not in res.stderr and "control character" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_dangling_link_creates_no_folder_anywhere(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    work = tmp_path / "work"
    work.mkdir()
    for target in (work / "missing" / "deeper" / "x.json", elsewhere / "a" / "b" / "x.json"):
        link = work / "link.json"
        link.unlink(missing_ok=True)
        link.symlink_to(target)
        res = invoke(*_writer_commands(str(link))["init"])
        assert_one_line_error(res, "--output")
        assert not (work / "missing").exists() and not elsewhere.exists()


def test_a_link_out_of_its_folder_is_not_written_through(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    work = tmp_path / "work"
    work.mkdir()
    (work / "plan.json").symlink_to(victim)
    res = invoke("import-hf", MIXTRAL, "--output", work / "plan.json")
    assert_one_line_error(res, "outside the folder")
    assert victim.read_text() == "precious"


# ------------------------------------------------------------------ sizes

def _model(**changes) -> dict:
    doc = copy.deepcopy(BASE)
    doc["model"].update(changes)
    for key in ("moe_layers", "layer_types"):
        doc["model"].pop(key, None)
    return doc


@pytest.mark.parametrize("field, cap", [("num_layers", MAX_LAYERS), ("num_experts", MAX_EXPERTS),
                                        ("num_attention_heads", MAX_HEADS), ("num_kv_heads", MAX_HEADS)])
def test_sizes_over_the_caps_are_named_with_the_cap(tmp_path, field, cap):
    for value in (cap + 1, 10**9):
        path = tmp_path / "big.json"
        path.write_text(json.dumps(_model(**{field: value})))
        for args in (["inspect", path], ["check", path, SEED_PLAN], ["solve", path, "--time-limit", "1"],
                     ["init", "--model", path, "--gpu", "b200", "--gpus", "8", "--output", tmp_path / "i.json"]):
            res = invoke(*args)
            assert_one_line_error(res, f"model.{field}={value}")
            assert f"less than or equal to {cap}" in res.stderr


@pytest.mark.parametrize("config", sorted(HF_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_hf_configs_with_a_trillion_layers_are_refused_before_anything_is_built(tmp_path, config):
    doc = json.loads(config.read_text())
    section = doc.get("text_config", doc)
    key = "n_layers" if "n_layers" in section else "num_hidden_layers"
    section[key] = 10**12
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    for args in (["import-hf", path], ["inspect", path]):
        res = invoke(*args)
        assert_one_line_error(res, f"{key}=1000000000000: must be <= {MAX_LAYERS}")


def _peak_rss_gb(args: list, limit_gb: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run moeopt in a child whose address space is capped at ``limit_gb``; (result, the
    child's peak resident memory in GB)."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (int(limit_gb * 2**30),) * 2)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = subprocess.run([sys.executable, "-m", "optimizer.cli", *map(str, args)], capture_output=True,
                         text=True, timeout=300, preexec_fn=cap)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return res, max(peak, before) / 2**20


@pytest.mark.slow
def test_the_largest_valid_model_and_hostile_sizes_stay_within_2_gb(tmp_path):
    """At the caps (1024 layers x 4096 experts x 1024 heads, 65536 GPUs) inspect and check
    work, and the 10^9 x 10^9 model that took 10-15 GB is refused, under a 2 GiB cap on
    the address space of each process that reads no solver (ortools maps more)."""
    at_caps = _model(num_layers=MAX_LAYERS, num_experts=MAX_EXPERTS, num_attention_heads=MAX_HEADS,
                     num_kv_heads=MAX_HEADS)
    at_caps["hardware"]["num_gpus"] = 65536
    huge = _model(num_layers=10**9, num_experts=10**9)
    hf = json.loads(MIXTRAL.read_text())
    hf["num_hidden_layers"] = 10**12
    paths = {}
    for name, doc in (("at_caps", at_caps), ("huge", huge), ("hf", hf)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(doc))
    runs = [(["inspect", paths["at_caps"]], 0), (["inspect", paths["huge"]], 2),
            (["check", paths["huge"], SEED_PLAN], 2), (["import-hf", paths["hf"]], 2),
            (["inspect", paths["hf"]], 2), (["check", paths["at_caps"], SEED_PLAN], 3)]
    for args, code in runs:
        res, peak_gb = _peak_rss_gb(args, 2.0)
        assert res.returncode == code, f"{args}: {res.returncode}\n{res.stderr}"
        assert "internal error" not in res.stderr
        assert peak_gb < 2.0
    doc = json.loads(_peak_rss_gb(["inspect", paths["at_caps"], "--format", "json"], 2.0)[0].stdout)
    assert (doc["num_layers"], doc["num_experts"], doc["num_gpus"]) == (MAX_LAYERS, MAX_EXPERTS, 65536)


# ------------------------------------------------------------------ names and terminal escapes

@pytest.mark.parametrize("value, ok", [("10b_moe", True), ("a" * 128, True), ("a" * 129, False),
                                       ("../evil", False), ("a/b", False), ("..", False), ("", False),
                                       ("-rf", False), ("x\x1b", False), ("\u00e9", False)])
def test_result_name(value, ok):
    adapter = TypeAdapter(ResultName)
    if ok:
        assert adapter.validate_python(value) == value
    else:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


@pytest.mark.parametrize("value, ok", [("Mixtral-8x7B \u00e9t\u00e9", True), ("x" * 200, True),
                                       ("x" * 201, False), ("\x1b[31mred", False), ("a\nb", False),
                                       ("\ud800", False), ("\u202eevil", False), ("nul\x00", False)])
def test_label(value, ok):
    adapter = TypeAdapter(Label)
    if ok:
        assert adapter.validate_python(value) == value
    else:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


def test_instance_name_is_a_result_name_and_named_in_the_error(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["name"] = "../../escaped"
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(doc))
    res = invoke("solve", path, "--time-limit", "1")
    assert_one_line_error(res, "name='../../escaped'")
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "results").exists()


def test_terminal_escapes_never_reach_the_terminal(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["model"]["\x1b[31mred\x1b]0;title\x07"] = 1  # an unknown key: named in the error
    path = tmp_path / "esc.json"
    path.write_text(json.dumps(doc))
    res = invoke("inspect", path)
    assert_one_line_error(res, "\\x1b[31mred\\x1b]0;title\\x07")
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr
    hf = json.loads(MIXTRAL.read_text())
    hf["_name_or_path"] = "evil\x1b[2J"
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(hf))
    for args in (["inspect", cfg], ["import-hf", cfg]):
        res = invoke(*args)
        assert_one_line_error(res, "name='evil\\x1b[2J': contains the control character '\\x1b'")


def test_report_plots_a_sweep_table_with_1e308(tmp_path):
    plan = json.loads(SEED_PLAN.read_text())
    table = tmp_path / "results" / plan["instance"] / "sweep.csv"
    table.parent.mkdir(parents=True)
    header = "num_gpus,ttft_s,throughput_tokens_per_ms_per_gpu,load_imbalance,communication_ms,pareto,feasible\n"
    table.write_text(header + "8,1e308,1e308,1e308,1e308,true,true\n16,-1e308,-1e308,-1e308,-1e308,false,true\n"
                     "1e308,0.5,2,0.1,3,false,false\n")
    res = invoke("report", SEED_PLAN, "--output", tmp_path / "r.html")
    assert res.exit_code == 0, shown(res)
    assert "sweep.csv: 3 deployments" in (tmp_path / "r.html").read_text()


def test_a_million_allowed_micro_batch_counts_are_refused(tmp_path):
    # 10**6 entries made inspect and check take ~0.5 GB and 20 s, and solve print them all
    doc = copy.deepcopy(BASE)
    doc["workload"]["micro_batches"] = list(range(1, 10**6 + 1))
    path = tmp_path / "mb.json"
    path.write_text(json.dumps(doc))
    for args in (["inspect", path], ["solve", path, "--time-limit", "1"]):
        assert_one_line_error(invoke(*args), "workload.micro_batches has 1000000 entries; at most 4096")
    doc["workload"]["micro_batches"] = list(range(1, 4097))  # at the cap: valid
    path.write_text(json.dumps(doc))
    assert invoke("inspect", path).exit_code == 0
