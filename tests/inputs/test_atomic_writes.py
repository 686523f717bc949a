"""Every output file is written atomically (``fileio.write_atomic``): a killed write leaves
the old file or none, never half of one, and what a killed writer leaves beside it is
cleaned up by the next write. Special targets stay what they are: ``--output /dev/null``
writes to the device (renaming over it would replace ``/dev/null`` with a file when run
as root), a symbolic link keeps pointing where it did, a full disk is one line (exit 2).

The sweep's own kill-and-resume tests are in ``tests/search/test_sweep.py``.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optimizer.errors import InputError
from optimizer.inputs.files import STALE_TMP_S, write_atomic

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"

# moeopt with os.fsync slowed down, so that SIGKILL lands while a file is half written
# (between the temporary file's creation and its rename).
SLOW_FSYNC = ("import os, sys, time\n"
              "real = os.fsync\n"
              "def slow(fd):\n"
              "    time.sleep(60)\n"
              "    real(fd)\n"
              "os.fsync = slow\n"
              "from optimizer.cli import main\n"
              "sys.argv = ['moeopt'] + sys.argv[1:]\n"
              "main()\n")


def moeopt(*args, slow: bool = False) -> list[str]:
    prefix = [sys.executable, "-c", SLOW_FSYNC] if slow else [sys.executable, "-m", "optimizer.cli"]
    return prefix + [str(a) for a in args]


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    res = subprocess.run(moeopt("solve", INSTANCE, "--output", path), capture_output=True,
                         text=True, cwd=path.parent, timeout=300)
    assert res.returncode == 0, res.stderr
    return path


@pytest.mark.slow
def test_a_killed_export_leaves_no_half_file_and_the_next_one_cleans_up(plan, tmp_path):
    reference = tmp_path / "reference"
    res = subprocess.run(moeopt("export", plan, "--to", "sglang", "--output", reference),
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(moeopt("export", plan, "--to", "sglang", "--output", out, slow=True),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and temporaries(out)) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert temporaries(out), "the export never started writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # only the group this test started
            proc.wait()
    for path in out.iterdir():  # whatever has its real name is complete
        if not path.name.endswith(".tmp"):
            assert path.read_bytes() == (reference / path.name).read_bytes(), path.name
    left = temporaries(out)
    assert left, "SIGKILL should have left the temporary file of the write it cut short"
    old = time.time() - STALE_TMP_S - 5  # as a killed writer's file is, a minute later
    for path in left:
        os.utime(path, (old, old))
    res = subprocess.run(moeopt("export", plan, "--to", "sglang", "--output", out),
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert not temporaries(out), temporaries(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.iterdir():
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_young_temporary_file_is_left_alone(tmp_path):
    """A temporary file younger than STALE_TMP_S may belong to a live writer: kept."""
    target = tmp_path / "plan.json"
    young = tmp_path / ".plan.json.abc123.tmp"
    young.write_text("another writer, still writing")
    other = tmp_path / ".other.json.abc123.tmp"
    other.write_text("x")
    old = time.time() - STALE_TMP_S - 5
    os.utime(other, (old, old))
    write_atomic(target, "{}")
    assert target.read_text() == "{}"
    assert young.exists() and other.exists()  # young; and another file's


def test_dev_null_stays_a_device(tmp_path):
    before = os.stat("/dev/null")
    assert stat.S_ISCHR(before.st_mode)
    write_atomic("/dev/null", "a plan nobody keeps\n")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert not list(Path("/dev").glob(".null.*.tmp"))


@pytest.mark.slow
def test_solve_output_dev_null(tmp_path):
    res = subprocess.run(moeopt("solve", INSTANCE, "--output", "/dev/null"), capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(not Path("/dev/full").exists() or not stat.S_ISCHR(os.stat("/dev/full").st_mode),
                    reason="no /dev/full device here")
def test_a_full_disk_is_one_line_exit_2():
    with pytest.raises(InputError, match="cannot be written .*No space left on device"):
        write_atomic("/dev/full", "x" * 100_000, "--output")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_a_symbolic_link_keeps_pointing_at_its_target(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert real.read_text() == "new"
