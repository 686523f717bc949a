"""Write the synthetic request traces of ``instances/traces/`` (nothing is downloaded).

    python instances/make_traces.py            # (re)write the three traces
    python instances/make_traces.py --check    # exit 1 if a file differs from what this makes

Each trace is CSV ``arrival_s,prompt_tokens,output_tokens`` (the format ``workload.trace``
reads), seeded and byte-for-byte reproducible. Lengths come from the schema's own length
distributions (``optimizer.inputs.service.draw_lengths``); arrivals are a Poisson process
whose rate swings +-50 % over a 10-minute period (a diurnal-like ripple), drawn by thinning.
The shapes are chosen to resemble three public serving workloads in spirit, not copied
from any of them:

- chat: short prompts with a long tail, answers of a few hundred tokens, 8 requests/s;
- summarise: long documents (4-16 k tokens), short summaries, 1 request/s;
- code: medium prompts (file context), short completions, 4 requests/s.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.inputs.files import write_atomic
from optimizer.inputs.schema import LogNormalTokens
from optimizer.inputs.service import draw_lengths

HERE = Path(__file__).resolve().parent / "traces"
ROWS = 4000
PERIOD_S = 600.0


@dataclass(frozen=True)
class Shape:
    rate_rps: float
    prompt: LogNormalTokens
    output: LogNormalTokens
    seed: int


def _lognormal(mean: float, sigma: float, lo: int, hi: int) -> LogNormalTokens:
    return LogNormalTokens(kind="lognormal", mean_tokens=mean, sigma=sigma, min_tokens=lo, max_tokens=hi)


SHAPES = {
    "chat": Shape(8.0, _lognormal(600, 1.0, 8, 8192), _lognormal(250, 0.8, 1, 2048), 11),
    "summarise": Shape(1.0, _lognormal(7000, 0.4, 4096, 16384), _lognormal(200, 0.5, 16, 1024), 12),
    "code": Shape(4.0, _lognormal(1800, 0.7, 64, 8192), _lognormal(100, 1.0, 1, 1024), 13),
}


def arrivals(rate_rps: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n arrival times (s) of a Poisson process of rate r(t) = rate (1 + 0.5 sin(2 pi t / P)),
    by thinning a process of rate 1.5 * rate."""
    peak = 1.5 * rate_rps
    out: list[float] = []
    t = 0.0
    while len(out) < n:
        t += rng.exponential(1.0 / peak)
        if rng.random() * peak <= rate_rps * (1 + 0.5 * np.sin(2 * np.pi * t / PERIOD_S)):
            out.append(t)
    return np.array(out)


def trace_csv(shape: Shape, rows: int = ROWS) -> str:
    rng = np.random.default_rng(shape.seed)
    times = arrivals(shape.rate_rps, rows, rng)
    prompt = draw_lengths(shape.prompt, rows, rng)
    output = draw_lengths(shape.output, rows, rng)
    lines = ["arrival_s,prompt_tokens,output_tokens"]
    lines += [f"{t:.4f},{p},{o}" for t, p, o in zip(times, prompt, output)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, shape in SHAPES.items():
        path, text = HERE / f"{name}.csv", trace_csv(shape)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            write_atomic(path, text, str(path))
            print(f"wrote {path} ({ROWS} requests)")
    if stale:
        print(f"differs from make_traces.py: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
