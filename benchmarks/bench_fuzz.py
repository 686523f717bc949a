"""A larger fuzz campaign than the CI tests: thousands of generated inputs for every command.

    python -m benchmarks.bench_fuzz [--cases 2400] [--seed N] [--hang-s 120]

Inputs come from ``fuzzkit`` (mutated instance, plan, load and HuggingFace config files,
whole command lines, and the hostile inputs of ``tests/oracles/hostile.py``), each run in
this process through click's CliRunner in a fresh folder. Prints, per generator and command,
how many inputs it tried and how many ended in each exit code, the number of tracebacks and
contract violations (both must be zero), and the slowest inputs. A run that exceeds
``--hang-s`` seconds dumps every thread's stack and ends the campaign (a hang is a bug).
Exit status 1 when any input broke the contract.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.oracles import fuzzkit  # noqa: E402

# Share of the campaign per generator (the slow ones, which solve, get fewer inputs).
WEIGHTS = {"solve": 2, "inspect": 2, "check-instance": 1, "check-plan": 2, "export": 2, "report": 1,
           "place": 2, "hf": 2, "cli": 3, "hostile": 3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2400)
    ap.add_argument("--seed", type=int, default=None, help="default: from the clock (printed)")
    ap.add_argument("--hang-s", type=float, default=120.0)
    ap.add_argument("--show", type=int, default=5, help="violations printed in full")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    names = [n for n, w in WEIGHTS.items() for _ in range(w)]
    print(f"bench_fuzz: {args.cases} inputs, seed {seed}", flush=True)
    fuzzkit.solved_plan()

    by_gen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_cmd: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    tracebacks, violations, slowest = 0, [], []
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench_fuzz-"))
    try:
        for i in range(args.cases):
            gen = names[i % len(names)]
            folder = root / f"{i:05d}"
            folder.mkdir()
            case = fuzzkit.GENERATORS[gen](rng, folder)
            faulthandler.dump_traceback_later(args.hang_s, exit=True)
            out = fuzzkit.invoke(case.args, folder)
            faulthandler.cancel_dump_traceback_later()
            code = out.code if out.code in fuzzkit.ALLOWED_EXIT else f"other({out.code})"
            by_gen[gen][code] += 1
            by_cmd[case.command][code] += 1
            tracebacks += ("Traceback" in out.stdout or "Traceback" in out.stderr)
            problems = fuzzkit.violations(case, out)
            if problems:
                violations.append((problems, fuzzkit.describe(case, out)))
            slowest.append((out.seconds, gen, " ".join(case.args)[:140]))
            fuzzkit.restore(folder)
            shutil.rmtree(folder, ignore_errors=True)
            if (i + 1) % 200 == 0:
                print(f"  {i + 1} inputs, {time.perf_counter() - start:.0f} s, "
                      f"{len(violations)} violations", flush=True)
    finally:
        fuzzkit.restore(root)
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - start

    codes = [0, 2, 3, 4]
    for title, table in (("per generator", by_gen), ("per command", by_cmd)):
        print(f"\n{title}:")
        print(f"  {'':16} {'tried':>6} " + " ".join(f"{'exit ' + str(c):>7}" for c in codes) + f" {'other':>6}")
        for key in sorted(table):
            row = table[key]
            other = sum(v for k, v in row.items() if k not in codes)
            print(f"  {key:16} {sum(row.values()):>6} " + " ".join(f"{row[c]:>7}" for c in codes) + f" {other:>6}")
    total = collections.Counter()
    for row in by_gen.values():
        total.update(row)
    print(f"\ntotal: {sum(total.values())} inputs in {wall:.0f} s ({sum(total.values()) / wall:.1f}/s); "
          + ", ".join(f"exit {c}: {total[c]}" for c in codes)
          + f"; other exits: {sum(v for k, v in total.items() if k not in codes)}")
    print(f"tracebacks: {tracebacks}")
    print(f"contract violations: {len(violations)}")
    print("slowest inputs:")
    for seconds, gen, line in sorted(slowest, reverse=True)[:5]:
        print(f"  {seconds:6.2f} s  [{gen}] moeopt {line}")
    for problems, text in violations[: args.show]:
        print("=" * 72)
        print(problems)
        print(text)
    return 1 if violations or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
