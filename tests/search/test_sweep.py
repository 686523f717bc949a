"""``moeopt sweep``: outputs, the smallest GPU count, resume, crash safety, parallel jobs.

Sweeps run as separate processes (the installed ``moeopt`` console script) on the seed
instance, each into its own temporary folder, exactly as a user runs them. The sweep over
8,16 is the main fixture; 8,16,32,64,128 is the reference for the kill-and-resume test.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest

from optimizer.costs.units import LOAD_SCALE, NS_PER_MS, NS_PER_S
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.search.pareto import pareto_table
from optimizer.search.sweep import with_gpus

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"
INTERFACE_COLUMNS = ["num_gpus", "tp", "pp", "dp", "ep", "throughput_tokens_per_ms",
                     "throughput_tokens_per_ms_per_gpu", "ttft_s", "max_memory_gb",
                     "load_imbalance", "communication_ms", "feasible", "pareto"]
SORT_KEY = ["num_gpus", "ttft_s", "load_imbalance", "communication_ms"]
MANY = "8,16,32,64,128"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_script = shutil.which("moeopt", path=str(Path(sys.executable).parent))
MOEOPT = [_script] if _script else [sys.executable, "-c", "from optimizer.cli import main; main()"]


def moeopt(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(MOEOPT + [str(a) for a in args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def sweep(out: Path, gpus: str = "8,16", *extra, ok: bool = True) -> subprocess.CompletedProcess:
    res = moeopt("sweep", INSTANCE, "--gpus", gpus, "--output", out, *extra)
    if ok:
        assert res.returncode == 0, res.stderr + res.stdout
    return res


def read_csv(path_or_text) -> pd.DataFrame:
    src = StringIO(path_or_text) if isinstance(path_or_text, str) and "\n" in path_or_text else path_or_text
    return pd.read_csv(src)  # pandas >= 3 parses floats exactly (round trip)


def point_files(out: Path) -> dict[int, bytes]:
    return {int(p.stem): p.read_bytes() for p in (out / "sweep-points").glob("*.json")}


def leftovers(out: Path) -> list[Path]:
    """Temporary files anywhere under the results folder (half-written files)."""
    return sorted(p for p in out.rglob("*") if p.name.endswith(".tmp"))


def vector(row) -> tuple[int, int, int]:
    """Integer objective vector (TTFT ns, max hot*ep, communication ns) of a row."""
    return (round(row["ttft_s"] * NS_PER_S), round((row["load_imbalance"] + 1) * LOAD_SCALE),
            round(row["communication_ms"] * NS_PER_MS))


@pytest.fixture(scope="module")
def instance() -> Instance:
    return load_model(INSTANCE, Instance, "instance")


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """``moeopt sweep instances/10b_moe.json --gpus 8,16 --output DIR`` (jobs 1)."""
    out = tmp_path_factory.mktemp("sweep") / "jobs1"
    res = sweep(out)
    return out, res


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """The uninterrupted sweep over 8..128 GPUs: the reference of the kill test."""
    out = tmp_path_factory.mktemp("sweep") / "many"
    start = time.perf_counter()
    res = sweep(out, MANY)
    return out, res, time.perf_counter() - start


# ---------------------------------------------------------------- outputs
@pytest.mark.slow
def test_writes_every_output(first):
    out, _ = first
    for name in ("sweep.csv", "sweep.parquet", "sweep-summary.csv", "pareto.png"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    assert sorted(point_files(out)) == [8, 16]
    assert not leftovers(out)


def test_csv_has_the_interface_columns_and_order(first):
    out, _ = first
    df = read_csv(out / "sweep.csv")
    assert set(INTERFACE_COLUMNS) <= set(df.columns), set(INTERFACE_COLUMNS) - set(df.columns)
    assert list(df.columns[:5]) == ["num_gpus", "tp", "pp", "dp", "ep"]
    assert sorted(df["num_gpus"].unique()) == [8, 16]
    assert df.equals(df.sort_values(SORT_KEY, kind="stable").reset_index(drop=True))
    assert (df["tp"] * df["pp"] * df["dp"] == df["num_gpus"]).all()
    assert df["feasible"].dtype == bool and df["pareto"].dtype == bool
    per_gpu = df["throughput_tokens_per_ms"] / df["num_gpus"]
    assert ((per_gpu - df["throughput_tokens_per_ms_per_gpu"]).abs()
            <= 1e-9 * df["throughput_tokens_per_ms_per_gpu"]).all()


def test_pareto_column_is_the_front_across_counts(first):
    """``pareto`` marks exactly the rows no other row dominates on throughput per GPU
    (max), TTFT, imbalance, communication and GPU count (min)."""
    out, _ = first
    df = read_csv(out / "sweep.csv")
    keys = [(-r.throughput_tokens_per_ms_per_gpu, r.ttft_s, r.load_imbalance, r.communication_ms,
             r.num_gpus) for r in df.itertuples()]

    def dominated(k):
        return any(all(a <= b for a, b in zip(o, k)) and o != k for o in keys)
    assert [not dominated(k) for k in keys] == list(df["pareto"])
    assert df["pareto"].any()


def test_rows_are_each_counts_pareto_rows(first, instance):
    """The rows of one count are that count's ``pareto_table`` (same deployments, same
    integer objective vectors, same flags; floats to 1e-9)."""
    out, _ = first
    df = read_csv(out / "sweep.csv")
    for gpus in (8, 16):
        ref = pareto_table(with_gpus(instance, gpus))
        got = df[df["num_gpus"] == gpus].reset_index(drop=True)
        keys = ["num_gpus", "tp", "pp", "dp", "ep", "etp", "edp", "micro_batches", "feasible", "proven"]
        keys = [k for k in keys if k in got.columns and k in ref.columns]
        assert got[keys].to_dict("records") == ref[keys].to_dict("records")
        assert [vector(r) for _, r in got.iterrows()] == [vector(r) for _, r in ref.iterrows()]
        for col in ("throughput_tokens_per_ms", "throughput_tokens_per_ms_per_gpu", "max_memory_gb"):
            for a, b in zip(got[col], ref[col]):
                assert math.isclose(a, b, rel_tol=1e-9), (gpus, col, a, b)


def test_parquet_equals_csv(first):
    out, _ = first
    csv = read_csv(out / "sweep.csv")
    parquet = pd.read_parquet(out / "sweep.parquet")
    assert list(parquet.columns) == list(csv.columns)
    pd.testing.assert_frame_equal(parquet.reset_index(drop=True), csv, check_dtype=False,
                                  check_exact=True)


def test_pareto_png_is_a_valid_png(first):
    out, _ = first
    data = (out / "pareto.png").read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and data[-12:-4] == b"\x00\x00\x00\x00IEND"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 200 and height >= 150
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    assert mpimg.imread(out / "pareto.png").shape[:2] == (height, width)


def test_summary_names_the_smallest_count_meeting_every_requirement(first, instance):
    """sweep-summary.csv has one row per count; the stdout names the smallest count whose
    best plan meets every requirement; that plan's figures do meet them."""
    out, res = first
    summ = read_csv(out / "sweep-summary.csv")
    assert list(summ["num_gpus"]) == [8, 16]
    ok = summ[summ["meets_requirements"]]
    smallest = int(ok["num_gpus"].min())
    assert f"smallest GPU count meeting every requirement: {smallest}" in res.stdout
    req = instance.requirements
    row = summ[summ["num_gpus"] == smallest].iloc[0]
    assert row["ttft_s"] < req.max_ttft_s
    assert row["throughput_tokens_per_ms"] >= req.min_throughput_tokens_per_ms
    assert row["max_memory_gb"] <= instance.memory_limit_gb
    assert smallest == 8 < instance.hardware.num_gpus  # the seed deployment uses 64


@pytest.mark.slow
def test_smallest_count_skips_counts_that_fail(tmp_path, instance):
    """A count that cannot meet the requirements is listed with the reason and is not
    named; the smallest meeting count is."""
    res = sweep(tmp_path / "out", "2,8")
    summ = read_csv(tmp_path / "out" / "sweep-summary.csv")
    two = summ[summ["num_gpus"] == 2].iloc[0]
    assert not two["meets_requirements"], summ.to_string()
    assert isinstance(two["why_not"], str) and two["why_not"], summ.to_string()
    assert "smallest GPU count meeting every requirement: 8" in res.stdout, res.stdout + res.stderr


@pytest.mark.slow
def test_csv_format_prints_the_table(first, tmp_path):
    out, _ = first
    res = sweep(tmp_path / "again", "8,16", "--format", "csv")
    assert read_csv(res.stdout).equals(read_csv(out / "sweep.csv"))


# ---------------------------------------------------------------- resume
@pytest.mark.slow
def test_resume_does_not_recompute_finished_points(first, tmp_path):
    """A finished point file (marked by hand) survives ``--resume`` byte for byte; a
    missing point is computed; a damaged one is computed again; the table is unchanged."""
    src, _ = first
    out = tmp_path / "resume"
    shutil.copytree(src, out)
    p8, p16 = out / "sweep-points" / "8.json", out / "sweep-points" / "16.json"
    doc = json.loads(p8.read_text())
    doc["marker"] = "written by the test, must survive --resume"
    p8.write_text(json.dumps(doc, indent=1) + "\n")
    marked = p8.read_bytes()
    original16 = p16.read_bytes()
    p16.unlink()
    (out / "sweep.csv").unlink()
    sweep(out, "8,16", "--resume")
    assert p8.read_bytes() == marked
    assert json.loads(p16.read_bytes()) == json.loads(original16)
    assert (out / "sweep.csv").read_bytes() == (src / "sweep.csv").read_bytes()
    p16.write_text('{"num_gpus": 16, "rows": [')  # damaged: must be recomputed
    sweep(out, "8,16", "--resume")
    assert json.loads(p16.read_bytes()) == json.loads(original16)
    assert p8.read_bytes() == marked
    assert not leftovers(out)


@pytest.mark.slow
def test_resume_recomputes_a_point_file_that_lacks_its_keys(first, tmp_path):
    """A point file that is valid JSON but not a point (e.g. truncated by hand to
    ``{"num_gpus": 16}``) is computed again, not an internal error."""
    src, _ = first
    out = tmp_path / "partial"
    shutil.copytree(src, out)
    p16 = out / "sweep-points" / "16.json"
    p16.write_text('{"num_gpus": 16}\n')
    res = sweep(out, "8,16", "--resume", ok=False)
    assert res.returncode == 0, res.stderr
    assert json.loads(p16.read_bytes()) == json.loads((src / "sweep-points" / "16.json").read_bytes())


@pytest.mark.slow
def test_resume_does_not_reuse_points_of_another_instance(first, tmp_path, instance):
    """Points written for one instance are not taken as finished for a changed instance
    (here the TTFT limit drops to 1 s, which no plan on 8 or 16 GPUs meets): the
    resumed sweep must agree with a fresh sweep of the changed instance."""
    src, _ = first
    doc = json.loads(INSTANCE.read_text())
    doc["requirements"]["max_ttft_s"] = 1.0
    changed = tmp_path / "10b_moe.json"  # same file and instance name, other requirement
    changed.write_text(json.dumps(doc))
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    shutil.copytree(src, resumed)
    res_fresh = moeopt("sweep", changed, "--gpus", "8,16", "--output", fresh)
    res_resumed = moeopt("sweep", changed, "--gpus", "8,16", "--output", resumed, "--resume")
    assert res_fresh.returncode == res_resumed.returncode == 0, res_resumed.stderr
    smallest = [l for l in res_fresh.stdout.splitlines() if l.startswith("smallest GPU count")]
    assert smallest == [l for l in res_resumed.stdout.splitlines() if l.startswith("smallest GPU count")]
    assert (resumed / "sweep-summary.csv").read_bytes() == (fresh / "sweep-summary.csv").read_bytes()
    assert (resumed / "sweep.csv").read_bytes() == (fresh / "sweep.csv").read_bytes()


@pytest.mark.slow
def test_resume_of_a_finished_sweep_computes_nothing(many, tmp_path, monkeypatch):
    """Resuming a complete sweep computes no point again: the files stay as they are, and
    in process not one point is computed (counted, not timed)."""
    src, _, _ = many
    out = tmp_path / "done"
    shutil.copytree(src, out)
    before = point_files(out)
    sweep(out, MANY, "--resume")
    assert point_files(out) == before
    assert (out / "sweep.csv").read_bytes() == (src / "sweep.csv").read_bytes()
    from optimizer.cpsat.search import SolverSettings
    from optimizer.search import sweep as sweep_mod
    computed = []
    monkeypatch.setattr(sweep_mod, "sweep_point", lambda payload, gpus, *rest: computed.append(gpus))
    inst = load_model(INSTANCE, Instance, "instance")  # as the command reads it
    points = sweep_mod.run_points(inst, [int(g) for g in MANY.split(",")], out, SolverSettings.of(inst),
                                  resume=True)
    assert computed == []
    assert sorted(points) == [8, 16, 32, 64, 128]


@pytest.mark.slow
def test_sigkill_then_resume_loses_and_duplicates_nothing(many, tmp_path):
    """SIGKILL a sweep after its first point is written; every file left is complete JSON;
    ``--resume`` keeps the finished points as they are, computes the rest, and the table
    equals the uninterrupted sweep's (no point lost, none duplicated, no .tmp left)."""
    ref_out, _, _ = many
    out = tmp_path / "killed"
    proc = subprocess.Popen(MOEOPT + ["sweep", str(INSTANCE), "--gpus", MANY, "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    points = out / "sweep-points"
    try:
        _wait_for(lambda: points.is_dir() and any(points.glob("*.json")), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    survivors = point_files(out)
    assert 1 <= len(survivors) < 5, sorted(survivors)
    for gpus, data in survivors.items():
        assert json.loads(data)["num_gpus"] == gpus  # complete, parseable JSON
    assert not (out / "sweep.csv").exists()
    sweep(out, MANY, "--resume")
    after = point_files(out)
    assert sorted(after) == [8, 16, 32, 64, 128]
    for gpus, data in survivors.items():
        assert after[gpus] == data, f"finished point {gpus} was recomputed"
    for gpus, data in after.items():
        assert json.loads(data) == json.loads((ref_out / "sweep-points" / f"{gpus}.json").read_bytes())
    got, ref = read_csv(out / "sweep.csv"), read_csv(ref_out / "sweep.csv")
    assert got["num_gpus"].value_counts().to_dict() == ref["num_gpus"].value_counts().to_dict()
    assert (out / "sweep.csv").read_bytes() == (ref_out / "sweep.csv").read_bytes()
    assert not leftovers(out), leftovers(out)


def _wait_for(predicate, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    assert predicate(), "timed out waiting for the sweep"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


# Runs the sweep command with os.fsync slowed down, so that SIGKILL can land while a point
# file is half written (between the temporary file's creation and its rename).
SLOW_FSYNC = ("import os, sys, time\n"
              "real = os.fsync\n"
              "def slow(fd):\n"
              "    time.sleep(60)\n"
              "    real(fd)\n"
              "os.fsync = slow\n"
              "from optimizer.cli import main\n"
              "sys.argv = ['moeopt'] + sys.argv[1:]\n"
              "main()\n")


@pytest.mark.slow
def test_sigkill_during_a_write_leaves_nothing_after_resume(many, tmp_path):
    """SIGKILL while a point file is being written: no point file is half written (the
    write goes to a temporary file), and ``--resume`` leaves no temporary file behind."""
    ref_out, _, _ = many
    out = tmp_path / "mid-write"
    points = out / "sweep-points"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FSYNC, "sweep", str(INSTANCE), "--gpus", "8,16",
                             "--output", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: points.is_dir() and any(points.glob(".*.tmp")), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not list(points.glob("*.json"))  # the half-written point was never renamed
    sweep(out, "8,16", "--resume")
    assert sorted(point_files(out)) == [8, 16]
    for gpus, data in point_files(out).items():
        assert json.loads(data) == json.loads((ref_out / "sweep-points" / f"{gpus}.json").read_bytes())
    assert not leftovers(out), f"temporary files left after --resume: {leftovers(out)}"


@pytest.mark.slow
def test_sigkill_with_jobs_2_leaves_no_worker_behind(tmp_path):
    """SIGKILL of a ``--jobs 2`` sweep (the parent only, as the OOM killer or ``kill -9``
    does) must not leave its worker processes running."""
    out = tmp_path / "orphans"
    points = out / "sweep-points"
    proc = subprocess.Popen(MOEOPT + ["sweep", str(INSTANCE), "--gpus", MANY, "--jobs", "2",
                                      "--output", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: points.is_dir() and any(points.glob("*.json")), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.2)
        left = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "-g", str(proc.pid)],
                              capture_output=True, text=True).stdout
        assert not _group_alive(proc.pid), f"workers still running 20 s after the kill:\n{left}"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)  # only the processes this test started
        proc.wait()


# ---------------------------------------------------------------- parallel jobs
@pytest.mark.slow
def test_jobs_2_gives_the_same_table_as_jobs_1(first, tmp_path):
    src, res1 = first
    out = tmp_path / "jobs2"
    res2 = sweep(out, "8,16", "--jobs", "2")
    for name in ("sweep.csv", "sweep-summary.csv"):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(out / "sweep.parquet"),
                                  pd.read_parquet(src / "sweep.parquet"), check_exact=True)
    assert point_files(out) == point_files(src)
    def strip(text):
        return [l for l in text.splitlines() if not l.startswith("written:")]
    assert strip(res2.stdout) == strip(res1.stdout)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("text", ["8,x", "abc", "", ",", "0", "8,-16", "8;16", "8.5", "1e3", "70000"])
@pytest.mark.slow
def test_bad_gpus_text_exits_2(text, tmp_path):
    res = sweep(tmp_path / "bad", text, ok=False)
    assert res.returncode == 2, (text, res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "--gpus" in res.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_address_without_ray_backend_exits_2(tmp_path):
    res = sweep(tmp_path / "bad", "8", "--address", "127.0.0.1:6379", ok=False)
    assert res.returncode == 2 and "--address" in res.stderr
