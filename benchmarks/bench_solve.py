"""Timing of ``moeopt solve`` on an instance, against the exhaustive enumerator.

Prints (a) the wall time of the whole ``moeopt solve INSTANCE --output TMP`` process over
several runs (median, min, max); (b) the library ``solve()`` call alone (median of several
runs) and one run of ``bruteforce.brute_force`` in the same process, with their ratio;
(c) the status and objective of both. Exits 1 with a MISMATCH line when they disagree.

    python -m benchmarks.bench_solve [instances/10b_moe.json] [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from optimizer.cpsat.solve import solve  # noqa: E402
from optimizer.errors import InfeasibleError  # noqa: E402
from optimizer.inputs.files import load_model  # noqa: E402
from optimizer.inputs.schema import Instance  # noqa: E402
from tests.oracles import bruteforce  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCE = REPO / "instances" / "10b_moe.json"


def moeopt_command() -> list[str]:
    """The installed ``moeopt`` entry point, else the CLI module under this interpreter."""
    exe = shutil.which("moeopt") or str(Path(sys.executable).with_name("moeopt"))
    if Path(exe).exists():
        return [exe]
    return [sys.executable, "-m", "optimizer.cli"]


def time_process_s(instance: Path, runs: int) -> list[float]:
    """Wall seconds of ``runs`` whole ``moeopt solve`` processes."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(runs):
            cmd = moeopt_command() + ["solve", str(instance), "--output", f"{tmp}/plan{k}.json"]
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            out.append(time.perf_counter() - start)
            if done.returncode not in (0, 3):
                raise SystemExit(f"moeopt solve exited {done.returncode}: {done.stderr.strip()}")
    return out


def library_solve(inst: Instance) -> tuple[float, tuple[str, int | None, int | None]]:
    """(wall seconds, (status, objective_ns, makespan_ns)) of one ``solve()`` call."""
    start = time.perf_counter()
    try:
        r = solve(inst)
        outcome = (r.status, r.primary.objective, r.evaluation.makespan_ns)
    except InfeasibleError:
        outcome = ("infeasible", None, None)
    return time.perf_counter() - start, outcome


def brute_solve(inst: Instance) -> tuple[float, tuple[str, int | None, int | None]]:
    """(wall seconds, (status, objective_ns, makespan_ns)) of the enumerator."""
    start = time.perf_counter()
    ref = bruteforce.brute_force(inst)
    elapsed = time.perf_counter() - start
    if ref is None:
        return elapsed, ("infeasible", None, None)
    return elapsed, ("optimal", ref["objective_ns"], ref["makespan_ns"])


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.3f} s, min {min(values):.3f} s, "
            f"max {max(values):.3f} s over {len(values)} runs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("instance", nargs="?", default=str(DEFAULT_INSTANCE))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    path = Path(args.instance).resolve()
    inst = load_model(str(path), Instance, "instance")
    print(f"instance {path.name}: {inst.model.num_layers} layers, {inst.model.num_experts} experts, "
          f"{inst.hardware.num_gpus} GPUs")

    print(f"(a) moeopt solve process: {spread(time_process_s(path, args.runs))}")

    solves = [library_solve(inst) for _ in range(args.runs)]
    solve_times = [t for t, _ in solves]
    outcomes = {o for _, o in solves}
    brute_s, brute = brute_solve(inst)
    solve_median = statistics.median(solve_times)
    print(f"(b) library solve(): {spread(solve_times)}")
    print(f"    brute force: {brute_s:.3f} s (1 run); brute / solve (median) = "
          f"{brute_s / solve_median:.1f}x")

    ok = True
    for status, objective, span in sorted(outcomes, key=str):
        print(f"(c) solve: status {status}, objective {objective} ns, makespan {span} ns")
        if (status == "optimal") != (brute[0] == "optimal") or (objective, span) != brute[1:]:
            ok = False
    print(f"    brute: status {brute[0]}, objective {brute[1]} ns, makespan {brute[2]} ns")
    if not ok or len(outcomes) != 1:
        print(f"MISMATCH: solve {sorted(outcomes, key=str)} vs brute force {brute}")
        return 1
    print("agree: solve and brute force find the same optimum")
    return 0


if __name__ == "__main__":
    sys.exit(main())
