"""``moeopt sweep``, ``moeopt pareto`` and ``moeopt size`` with ``--backend ray --address
ADDR``: the work runs as Ray tasks on a cluster and gives the same tables as the local backend.
.ci/run installs the extra, so these run on every landing (about a minute in all here: the
cluster's start dominates; marked slow).

Needs the optional extra (``pip install -e '.[ray]'``); without Ray the cluster tests are
skipped with that message. The test starts its own small Ray cluster in this process
(``ray.init(num_cpus=2)``, temporary folder of its own), passes that cluster's address to
the ``moeopt`` command (a separate process, as a user would run it), and shuts the cluster
down at the end (``ray.shutdown`` stops the processes it started).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"
COUNTS = "8,16"
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="Ray is not installed: pip install -e '.[ray]' to test --backend ray")

_script = shutil.which("moeopt", path=str(Path(sys.executable).parent))
MOEOPT = [_script] if _script else [sys.executable, "-c", "from optimizer.cli import main; main()"]


def moeopt(*args, timeout=900) -> subprocess.CompletedProcess:
    """Run the command; ``timeout`` only guards against a hang (a busy machine is slow)."""
    return subprocess.run(MOEOPT + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray head with 2 CPUs; yields its GCS address; shut down afterwards."""
    import ray
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Unix socket paths are limited
    start = time.perf_counter()
    ctx = ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False,
                   configure_logging=False)
    started_s = time.perf_counter() - start
    try:
        yield ray, ctx.address_info["gcs_address"], started_s
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    res = moeopt("sweep", INSTANCE, "--gpus", COUNTS, "--output", out)
    assert res.returncode == 0, res.stderr
    return out, res


@pytest.mark.slow
@needs_ray
def test_ray_backend_gives_the_local_table(ray_cluster, local_run, tmp_path):
    """Same sweep.csv, summary and point files as the local backend, and the points really
    ran as Ray tasks on the given cluster."""
    ray, address, _ = ray_cluster
    local_out, local_res = local_run
    out = tmp_path / "ray"
    res = moeopt("sweep", INSTANCE, "--gpus", COUNTS, "--backend", "ray", "--address", address,
                 "--output", out)
    assert res.returncode == 0, res.stderr[-4000:]
    for name in ("sweep.csv", "sweep-summary.csv"):
        assert (out / name).read_bytes() == (local_out / name).read_bytes(), name
    for point in sorted((local_out / "sweep-points").glob("*.json")):
        assert (out / "sweep-points" / point.name).read_bytes() == point.read_bytes(), point.name
    assert "smallest GPU count meeting every requirement: 8" in res.stdout
    tasks = [e for e in ray.timeline() if str(e.get("name", "")).endswith("sweep_point")
             and e.get("ph") == "X"]
    assert len(tasks) >= len(COUNTS.split(",")), (
        f"no sweep_point task ran on the cluster at {address}: {[e.get('name') for e in ray.timeline()]}")


@pytest.mark.slow
@needs_ray
def test_ray_backend_resume_skips_finished_points(ray_cluster, local_run, tmp_path):
    """With --resume on Ray, a finished point on disk is not sent to the cluster again."""
    _, address, _ = ray_cluster
    local_out, _ = local_run
    out = tmp_path / "resume"
    shutil.copytree(local_out, out)
    marked = out / "sweep-points" / "8.json"
    marked.write_text(marked.read_text().rstrip("\n") + "\n\n")  # a byte change only we made
    before = marked.read_bytes()
    (out / "sweep-points" / "16.json").unlink()
    res = moeopt("sweep", INSTANCE, "--gpus", COUNTS, "--backend", "ray", "--address", address,
                 "--output", out, "--resume")
    assert res.returncode == 0, res.stderr[-4000:]
    assert marked.read_bytes() == before
    assert (out / "sweep.csv").read_bytes() == (local_out / "sweep.csv").read_bytes()


@pytest.mark.slow
def test_ray_backend_without_ray_exits_2(tmp_path):
    """When Ray is not importable, --backend ray is a usage error naming the extra."""
    code = ("import sys; sys.modules['ray'] = None\n"
            "from optimizer.cli import main\n"
            "sys.argv = ['moeopt'] + sys.argv[1:]\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code, "sweep", str(INSTANCE), "--gpus", "8",
                          "--backend", "ray", "--output", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "pip install -e '.[ray]'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


@needs_ray
def test_unreachable_address_fails_promptly(tmp_path):
    """An address where no Ray cluster answers is an error (exit 2, one line naming
    --address) after the 5 s connection attempt, not an endless wait for the cluster; the
    60 s guard leaves room for the interpreter's start-up on a busy machine."""
    try:
        res = moeopt("sweep", INSTANCE, "--gpus", "8", "--backend", "ray", "--address",
                     "127.0.0.1:1", "--output", tmp_path / "out", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("moeopt sweep --backend ray --address 127.0.0.1:1 still waiting after 60 s")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "--address" in res.stderr.strip().splitlines()[-1]


PARETO_INSTANCE = REPO / "instances" / "mixtral_8x7b_bf16_h100.json"


@pytest.mark.slow
@needs_ray
def test_pareto_ray_backend_gives_the_local_table(ray_cluster):
    """``pareto --backend ray --address A``: byte-identical CSV (every row, --all) and table
    text to the local run, computed by a pareto task on the given cluster."""
    ray, address, _ = ray_cluster
    from ray._private import state

    def pareto_drivers() -> int:
        """Driver jobs the cluster's GCS recorded for a ``pareto`` command line."""
        return sum("pareto" in str(job.get("Entrypoint", "")) for job in state.jobs())

    before = pareto_drivers()
    for args in (["--all", "--format", "csv"], []):
        local = moeopt("pareto", PARETO_INSTANCE, "--time-limit", "60", *args)
        remote = moeopt("pareto", PARETO_INSTANCE, "--time-limit", "60", "--backend", "ray",
                        "--address", address, *args)
        assert local.returncode == 0 and remote.returncode == 0, remote.stderr[-3000:]
        assert remote.stdout == local.stdout
    assert len(local.stdout.splitlines()) >= 3  # a header, rows and the top summary
    # each remote run connected to this cluster as a driver (the GCS job table is exact; the
    # task timeline drops events of short-lived drivers, so it cannot serve as the proof)
    assert pareto_drivers() - before == 2, [job.get("Entrypoint") for job in state.jobs()]


def test_pareto_address_needs_the_ray_backend():
    res = moeopt("pareto", PARETO_INSTANCE, "--address", "127.0.0.1:6379")
    assert res.returncode == 2 and res.stderr.strip() == (
        "moeopt: --address=127.0.0.1:6379: only with --backend ray")


def _without_walls(value):
    """A size answer with its wall-clock figures removed (they differ run to run)."""
    if isinstance(value, dict):
        return {k: _without_walls(v) for k, v in value.items() if "wall" not in k}
    if isinstance(value, list):
        return [_without_walls(v) for v in value]
    return value


@pytest.mark.slow
@needs_ray
def test_size_ray_backend_gives_the_local_answers(ray_cluster, tmp_path):
    """``size --rate-range --backend ray --address A``: one task per rate on the cluster; the
    fewest GPUs and their status are what ``size --rate R`` and the local ``--rate-range`` run
    give, every one proven, each plan on that many GPUs serving the rate."""
    import json

    from tests.cpsat.test_disagg_model import tiny_disagg
    ray, address, _ = ray_cluster
    from ray._private import state
    inst = tmp_path / "tiny.json"
    inst.write_text(json.dumps(tiny_disagg()))
    from tests.cpsat.test_service_solve import UNREACHED_LIMIT_S
    # a limit none of these solves reaches: the "optimal" asserted below must not depend on load
    common = ["--gpus-allowed", "1-16", "--format", "json", "--time-limit", str(int(UNREACHED_LIMIT_S))]
    before = sum("size" in str(job.get("Entrypoint", "")) for job in state.jobs())
    remote = moeopt("size", inst, "--rate-range", "100:200:100", *common, "--backend", "ray", "--address", address)
    assert remote.returncode == 0, remote.stderr[-3000:]
    remote_rows = json.loads(remote.stdout)
    assert [r["rate_rps"] for r in remote_rows] == [100, 200]
    singles = [json.loads(moeopt("size", inst, "--rate", rate, *common).stdout) for rate in ("100", "200")]
    ranged = json.loads(moeopt("size", inst, "--rate-range", "100:200:100", *common).stdout)
    for mine, single, theirs in zip(remote_rows, singles, ranged):
        for mode in ("agg", "disagg"):
            # proven fewest GPUs agree; among plans of that count CP-SAT's automatic workers
            # may pick another (a tie), so the plans themselves are not compared
            assert mine[mode]["status"] == single[mode]["status"] == theirs[mode]["status"] == "optimal"
            assert mine[mode]["num_gpus"] == single[mode]["num_gpus"] == theirs[mode]["num_gpus"]
            assert mine[mode]["plan"]["num_gpus"] == mine[mode]["num_gpus"]
            assert mine[mode]["goodput_rps"] >= mine["rate_rps"]
    assert sum("size" in str(job.get("Entrypoint", "")) for job in state.jobs()) - before == 1


def test_size_address_needs_the_ray_backend(tmp_path):
    res = moeopt("size", INSTANCE, "--rate", "1", "--address", "127.0.0.1:6379")
    assert res.returncode == 2 and res.stderr.strip() == (
        "moeopt: --address=127.0.0.1:6379: only with --backend ray")
