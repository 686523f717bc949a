"""Rebalancing benchmark of ``moeopt place --current``: expert moves against the tolerance.

DeepSeek-V3 shape (256 experts, 131,072 routed copies per layer, ``--layers`` layers), 32 GPUs
in 4 nodes with 32 redundant slots. The placement in service is ``place``'s plan for
yesterday's loads (lognormal weights, sigma 0.6); today's loads multiply each weight by
lognormal drift (sigma ``--drift``, default 0.1 and 0.3), copies drawn multinomially,
seeded. For each tolerance it prints the moves (and the share of slots kept), the moves of
the from-scratch plan best relabelled, the balancedness of the rebalanced plan and of the
best from scratch, and the wall time (one worker).

    python -m benchmarks.bench_place_rebalance [--layers 8] [--time-limit 40]
"""

from __future__ import annotations

import argparse

import numpy as np

from optimizer.place import PlaceSpec, Settings, place
from optimizer.place.rebalance import rebalance

EXPERTS, TOKENS, G, R, K = 256, 131_072, 32, 32, 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--time-limit", type=float, default=40.0)
    ap.add_argument("--drift", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--tolerance", type=float, nargs="+", default=[0.0, 0.001, 0.01])
    args = ap.parse_args()
    rng = np.random.default_rng(4)
    spec = PlaceSpec(G, R, K)
    ids = list(range(args.layers))
    weights = rng.lognormal(0.0, 0.6, (args.layers, EXPERTS))
    old = np.array([rng.multinomial(TOKENS, w / w.sum()) for w in weights])
    served = place(old, ids, spec, Settings(time_limit_s=args.time_limit))
    current = {lp.layer: np.array(lp.ranks) for lp in served.layers}
    slots = args.layers * (EXPERTS + R)
    print(f"{'drift':>5} {'tol':>6} {'moves':>6} {'kept':>7} {'scratch':>7} {'bal':>8} {'bal_best':>8} {'wall_s':>6}")
    for drift in args.drift:
        w2 = weights * rng.lognormal(0.0, drift, weights.shape)
        new = np.array([rng.multinomial(TOKENS, w / w.sum()) for w in w2])
        for tol in args.tolerance:
            res = rebalance(new, ids, current, spec, Settings(time_limit_s=args.time_limit), tol)
            m = res.extra["migration"]
            bal = np.mean([lp.balancedness for lp in res.layers])
            best = np.mean([lp.mean_load / lp.migration["best_max_load"] for lp in res.layers])
            print(f"{drift:>5.2f} {tol:>6.3f} {m['moves']:>6} {100 * (1 - m['moves'] / slots):>6.2f}% "
                  f"{m['scratch_moves']:>7} {bal:>8.5f} {best:>8.5f} {res.wall_s:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
