"""Untrusted plan files: one reader for check and export, hostile strings, paths and sizes.

A small corpus of hostile plans, each refused at the boundary (exit 2, one line naming the
field) or made harmless where it is written; launch.sh files written from hostile names are run
with bash against fake runtimes to prove that no injected command runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from optimizer.cli import main
from optimizer.inputs.schema import Instance
from optimizer.output.export import export, write_export
from optimizer.plan.files import MAX_PLAN_GPUS, PlanFile, check_structure, plan_from_doc
from tests.output.test_export import hand_plan

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"
SEED = REPO / "instances" / "seed_plan.json"
LAUNCH_FORMATS = ("sglang", "vllm", "trtllm", "megatron")
HOSTILE = ["x\ntouch PWNED_NL\n#", "$(touch PWNED_SUB)", "`touch PWNED_TICK`",
           "'; touch PWNED_SQ; '", '"; touch PWNED_DQ; "', "a; touch PWNED_SEMI", "\r\x1b[2J"]
BIG = 10 ** 400   # a 401-digit integer: JSON allows it, no float holds it
FAKES = ("python3", "python", "vllm", "trtllm-serve", "trtllm-llmapi-launch", "torchrun", "srun",
         "sglang")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_exit_2(res, *words: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("moeopt: "), res.output
    assert "Traceback" not in res.output
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def instance() -> Instance:
    return Instance.model_validate(json.loads(INSTANCE.read_text()))


# --------------------------------------------------------------------------- shell injection


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory) -> Path:
    """Fake runtimes first on PATH: each appends its name and arguments to $FAKE_LOG."""
    bin_dir = tmp_path_factory.mktemp("bin")
    for name in FAKES:
        exe = bin_dir / name
        exe.write_text('#!/usr/bin/env bash\nprintf "%s" "$(basename "$0")" >> "$FAKE_LOG"\n'
                       'printf " [%s]" "$@" >> "$FAKE_LOG"\necho >> "$FAKE_LOG"\n')
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return bin_dir


@pytest.mark.parametrize("fmt", LAUNCH_FORMATS)
def test_hostile_names_never_run_from_launch_sh(fmt, tmp_path, fake_bin):
    """Writers quote what they are given even past the boundary: every hostile string as the
    plan's name and source, launch.sh run by bash, the fake runtime reached, nothing injected."""
    base = plan_from_doc(hand_plan(tp=1, dp=8, ep=8))
    for k, bad in enumerate(HOSTILE):
        p = dataclasses.replace(base, name=bad, source=bad)
        out = tmp_path / f"out{k}"
        write_export(export(p, fmt, out), out)
        script = (out / "launch.sh").read_text()
        lines = script.splitlines()   # the title comment stayed one line
        assert lines[1].startswith("# ") and lines[2] == "# written by moeopt export; see README.txt"
        assert not any("PWNED" in line and not line.startswith("#") for line in script.splitlines())
        work = tmp_path / f"run{k}"
        work.mkdir()
        log = work / "fake.log"
        env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "MODEL": "m", "FAKE_LOG": str(log),
               "NODE_RANK": "0", "HEAD_ADDR": "127.0.0.1", "INSTANCE": "0", "HOME": str(work)}
        proc = subprocess.run(["bash", str(out / "launch.sh")], cwd=work, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert log.read_text().strip(), "the fake runtime was not reached"
        assert not list(work.glob("PWNED*")) and not list(out.glob("PWNED*")), (bad, script)
        if fmt == "trtllm":
            text = (out / "extra_llm_api_options.yaml").read_text()
            assert text.splitlines()[0].startswith("# ") and text.count("\n#") == 0
            assert yaml.safe_load(text)["moe_config"]["load_balancer"]["num_slots"] == 16


@pytest.mark.parametrize("bad", HOSTILE + ["../../escaped", "..", "a/b", ""])
def test_hostile_instance_refused_at_the_boundary(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = hand_plan()
    doc["instance"] = bad
    write(tmp_path / "p.json", doc)
    for fmt in ("csv",) + LAUNCH_FORMATS:
        one_line_exit_2(invoke("export", "p.json", "--to", fmt), "instance=")
    one_line_exit_2(invoke("check", INSTANCE, "p.json"), "instance=")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.json"]   # nothing written
    assert not (tmp_path.parent / "escaped").exists()


# --------------------------------------------------------------------------- paths


def test_export_never_writes_through_a_symlinked_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    write(tmp_path / "p.json", hand_plan())                     # instance "hand"
    Path("results").mkdir()
    os.symlink(outside, "results/hand")
    one_line_exit_2(invoke("export", "p.json", "--to", "csv"), "symbolic link")
    assert list(outside.iterdir()) == []
    os.unlink("results/hand")
    os.rmdir("results")
    os.symlink(outside, "results")                              # results/ itself elsewhere
    one_line_exit_2(invoke("export", "p.json", "--to", "csv"), "symbolic link")
    assert list(outside.iterdir()) == []


def test_export_never_writes_through_a_symlinked_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "victim.txt"
    target.write_text("KEEP")
    write(tmp_path / "p.json", hand_plan())
    Path("out").mkdir()
    os.symlink(target, "out/gpus.csv")
    one_line_exit_2(invoke("export", "p.json", "--to", "csv", "--output", "out"), "symbolic link")
    assert target.read_text() == "KEEP"


def test_default_folder_is_below_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "p.json", hand_plan())
    res = invoke("export", "p.json", "--to", "csv")
    assert res.exit_code == 0, res.output
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.csv")] == [
        "results/hand/export-csv/gpus.csv"]


# --------------------------------------------------------------------------- sizes and numbers


def test_gpu_cap_is_one_line_and_quick(tmp_path):
    """dp = 2^20 used to run for half a minute and write 52 MB; now exit 2 before any layout."""
    doc = {"instance": "big", "num_experts": 16, "degrees": {"tp": 1, "pp": 1, "dp": 1 << 20, "ep": 1},
           "stages": [{"stage": 0, "layers": [0, 1]}]}
    write(tmp_path / "big.json", doc)
    proc = subprocess.run([sys.executable, "-m", "optimizer.cli", "export", "big.json", "--to", "csv"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "tp*pp*dp=1048576" in proc.stderr and str(MAX_PLAN_GPUS) in proc.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["big.json"]


@pytest.mark.parametrize("where, field", [
    (lambda d: d["metrics"].__setitem__("ttft_s", BIG), "metrics.ttft_s"),
    (lambda d: d["gpus"][0]["memory_gb"].__setitem__("total", BIG), "memory_gb.total"),
    (lambda d: d.__setitem__("status", BIG), "status"),
    (lambda d: d.__setitem__("sequences_per_micro_batch", BIG), "sequences_per_micro_batch"),
    (lambda d: d.__setitem__("status", "optimal\x1b[31m"), "status"),
])
def test_huge_or_hostile_figures_exit_2(where, field, tmp_path):
    doc = hand_plan()
    where(doc)
    write(tmp_path / "p.json", doc)
    one_line_exit_2(invoke("export", tmp_path / "p.json", "--to", "csv", "--output", tmp_path / "o"),
                    field)
    one_line_exit_2(invoke("check", INSTANCE, tmp_path / "p.json"), field)


# --------------------------------------------------------------------------- one reader


BROKEN = {
    "stage-numbers-0-2": lambda d: d["stages"][1].__setitem__("stage", 2),
    "duplicate-rank": lambda d: d["gpus"][1].__setitem__("rank", 0),
    "num-gpus": lambda d: d.__setitem__("num_gpus", 128),
    "placement-ranks": lambda d: d["expert_placement"]["0"].pop(),
    "uneven-stages-cover": lambda d: d["stages"][1]["layers"].pop(),
    "local-rank-twice": lambda d: d["gpus"][1].__setitem__("local_rank", d["gpus"][0]["local_rank"]),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_refuses_what_export_refuses(name, tmp_path):
    """The same reader: export's one line is check's first reason, and check exits 3."""
    doc = hand_plan(tp=1, pp=2, dp=4, ep=4, layers=16, experts=16)
    doc["instance"] = "10b_moe"
    BROKEN[name](doc)
    path = write(tmp_path / "p.json", doc)
    line = one_line_exit_2(invoke("export", path, "--to", "csv", "--instance", INSTANCE,
                                  "--output", tmp_path / "o"))
    res = invoke("check", INSTANCE, path)
    assert res.exit_code == 3, res.output
    why = [ln.strip().removeprefix("why: ") for ln in res.output.splitlines() if "why:" in ln]
    assert why and why[0] == line.removeprefix("moeopt: "), (why, line)
    assert "VIOLATED" in res.output and res.output.rstrip().endswith("plan is not valid")


def test_valid_hand_plan_reads_the_same_in_check_and_export():
    """Optional fields absent: etp 1, edp = tp*dp/(etp*ep) = 2*4/(1*8) = 1, even stages
    16/2 = 8 layers each, Megatron layout, contiguous experts (16/8 = 2 per EP rank)."""
    doc = {"instance": "10b_moe", "degrees": {"tp": 2, "pp": 2, "dp": 4, "ep": 8}}
    plan, checks, problems = check_structure(instance(), PlanFile.model_validate(doc))
    assert plan is not None and not problems, [c for c in checks if not c.ok]
    exported = plan_from_doc(doc, instance())
    assert plan.deg == exported.deg and (plan.deg.etp, plan.deg.edp) == (1, 1)
    assert plan.stages == exported.stages == (tuple(range(8)), tuple(range(8, 16)))
    assert plan.slots == exported.gpus
    assert plan.placement[5] == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15))


def test_check_verdicts_on_stated_figures(tmp_path):
    """status, instance and per-GPU memory each get a verdict when false."""
    doc = json.loads(SEED.read_text())
    doc["status"] = "optimal"
    doc["instance"] = "another_one"
    path = write(tmp_path / "p.json", doc)
    out = json.loads(invoke("check", INSTANCE, path, "--format", "json").stdout)
    verdicts = {c["name"]: (c["stated"], c["computed"], c["verdict"]) for c in out["claims"]}
    assert out["feasible"] is True                          # the seed plan meets every constraint
    assert "status" not in verdicts                          # "optimal": feasibility holds
    assert verdicts["instance"] == ("another_one", "10b_moe", "does not hold")
    doc["status"] = "best-ever"
    out = json.loads(invoke("check", INSTANCE, write(tmp_path / "q.json", doc), "--format", "json").stdout)
    assert {c["name"]: c["verdict"] for c in out["claims"]}["status"] == "does not hold"
    doc["degrees"]["tp"] = 16                              # TP 16 > 8 GPUs per node: infeasible
    doc["num_gpus"] = 256
    doc["status"] = "optimal"
    res = invoke("check", INSTANCE, write(tmp_path / "r.json", doc), "--format", "json")
    assert res.exit_code == 3
    out = json.loads(res.stdout)
    assert {c["name"]: c["verdict"] for c in out["claims"]}["status"] == "does not hold"


def test_check_memory_verdict(tmp_path):
    """A solved plan's memory reproduces exactly; three GPUs stating 1 GB are named."""
    doc = hand_plan(tp=1, pp=2, dp=4, ep=4, layers=16, experts=16)
    doc["instance"] = "10b_moe"
    del doc["metrics"]
    out = json.loads(invoke("check", INSTANCE, write(tmp_path / "p.json", doc), "--format", "json").stdout)
    total = [c for c in out["claims"] if c["name"] == "memory_gb.total"]
    # hand_plan states 3.75 GB on every GPU, far from any real 10B-MoE stage: all 8 are wrong
    assert total and total[0]["verdict"] == "does not hold" and total[0]["stated"] == 3.75
    assert total[0]["text"].startswith("memory_gb.total: 8/8 GPUs")
    for g in doc["gpus"]:                                   # state moeopt's own figures
        g["memory_gb"] = {"total": total[0]["computed"]}
    out = json.loads(invoke("check", INSTANCE, write(tmp_path / "q.json", doc), "--format", "json").stdout)
    stage1 = [c for c in out["claims"] if c["name"] == "memory_gb.total"]
    # stage 1 holds the last layers (and the head): its figure differs from stage 0's
    assert all(c["verdict"] == "does not hold" and c["text"].startswith("memory_gb.total: 4/8")
               for c in stage1)


def test_export_with_instance_accepts_dense_layers(tmp_path):
    """An instance whose layer 0 is dense: export --instance, check and the reader agree."""
    data = json.loads(INSTANCE.read_text())
    data["model"]["moe_layers"] = list(range(1, data["model"]["num_layers"]))
    data["model"]["dense_ffn_size"] = 1024
    inst_path = write(tmp_path / "inst.json", data)
    plan = {"instance": data["name"], "degrees": {"tp": 1, "pp": 1, "dp": 8, "ep": 8}}
    path = write(tmp_path / "p.json", plan)
    assert invoke("check", inst_path, path).exit_code in (0, 3)    # read, not refused
    res = invoke("export", path, "--to", "sglang", "--instance", inst_path, "--output", tmp_path / "s")
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "s" / "expert_location.json").read_text())["physical_to_logical_map"]
    # 16 layers x 16 slots; the dense layer 0 gets the trivial map p mod 16 = p
    assert len(rows) == 16 and all(row == list(range(16)) for row in rows)
    res = invoke("export", path, "--to", "megatron", "--instance", inst_path, "--output", tmp_path / "m")
    assert res.exit_code == 0, res.output
    assert "--moe-layer-freq '([0]*1+[1]*15)'" in (tmp_path / "m" / "megatron_args.txt").read_text()


def test_layer_times_slot_cap(tmp_path):
    """dense_layers [1048575] with 2^20 experts would make an SGLang map of 2^40 ids."""
    doc = {"instance": "wide", "num_experts": 1 << 20, "dense_layers": [(1 << 20) - 1],
           "degrees": {"tp": 1, "pp": 1, "dp": 1, "ep": 1}}
    write(tmp_path / "w.json", doc)
    one_line_exit_2(invoke("export", tmp_path / "w.json", "--to", "sglang", "--output", tmp_path / "o"),
                    "1048576 layers x 1048576 expert slots", str(1 << 24))
    assert not (tmp_path / "o").exists()


def test_vllm_loads_follow_layer_indices_with_dense_layers(tmp_path):
    """Expert loads come one row per MoE layer; vLLM's comparison indexes them by layer: with
    layer 0 dense and a non-contiguous placement, layer 15 must find its row (used to crash)."""
    data = json.loads(INSTANCE.read_text())
    data["model"]["moe_layers"] = list(range(1, data["model"]["num_layers"]))
    data["model"]["dense_ffn_size"] = 1024
    inst_path = write(tmp_path / "inst.json", data)
    doc = hand_plan(tp=1, dp=8, ep=8, layers=16, experts=16, dense=(0,))
    doc["instance"] = data["name"]
    res = invoke("export", write(tmp_path / "p.json", doc), "--to", "vllm", "--instance", inst_path,
                 "--output", tmp_path / "v")
    assert res.exit_code == 0, res.output
    readme = (tmp_path / "v" / "README.txt").read_text()
    assert "plan placement : worst layer" in readme and "worst layer 0 " not in readme


def test_partial_reading_for_the_report():
    """Degrees alone: export refuses (no layers, no experts), a partial reading shows the
    Megatron layout: dp 3 x ep 3 -> 3 GPUs, EP rank = DP rank, no stages, no MoE layers."""
    from optimizer.errors import InputError
    from optimizer.plan.files import plan_data
    pf = PlanFile.model_validate({"instance": "x", "degrees": {"tp": 1, "pp": 1, "dp": 3, "ep": 3}})
    with pytest.raises(InputError, match="give --instance"):
        plan_data(pf)
    data = plan_data(pf, partial=True)
    assert data.stages == () and data.experts.moe_layers == []
    assert [(g.rank, g.dp_rank, g.ep_rank) for g in data.gpus] == [(0, 0, 0), (1, 1, 1), (2, 2, 2)]


def test_local_rank_cap_without_instance(tmp_path):
    """One GPU at local_rank 10^6 would make a node a million GPUs wide."""
    doc = hand_plan(tp=1, dp=1, ep=1, experts=4)
    doc["gpus"][0]["local_rank"] = 10 ** 6
    write(tmp_path / "p.json", doc)
    one_line_exit_2(invoke("export", tmp_path / "p.json", "--to", "csv", "--output", tmp_path / "o"),
                    "local_rank 1000000", "4096 GPUs per node")


def test_hostile_instance_name_refused(tmp_path, monkeypatch):
    """An instance named like a path and a command: refused with one line, nothing written."""
    monkeypatch.chdir(tmp_path)
    data = json.loads(INSTANCE.read_text())
    data["name"] = "../../escaped\n$(touch PWNED)"
    inst_path = write(tmp_path / "inst.json", data)
    doc = hand_plan(tp=1, pp=2, dp=4, ep=4, layers=16, experts=16)
    del doc["instance"]
    write(tmp_path / "myplan.json", doc)
    one_line_exit_2(invoke("export", "myplan.json", "--to", "sglang", "--instance", inst_path), "name=")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["inst.json", "myplan.json"]
    assert not (tmp_path.parent / "escaped").exists()
