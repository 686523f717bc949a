"""Anytime benchmark of ``moeopt place``: balancedness against the time limit, next to the
EPLB-style greedy computed in the same run.

Cases (synthetic loads, generated here with fixed seeds; routed token copies per layer):
- DeepSeek-V3 shape: 58 MoE layers x 256 experts, 131,072 copies per layer (16384 tokens x
  top-8); Kimi-K2 shape: 60 MoE layers x 384 experts, 131,072 copies per layer.
- skew "mild": lognormal weights (sigma 0.6); "heavy": Zipf-like ``(rank+1)^-s``,
  ``s ~ U(0.9, 1.2)`` over a random expert order, times lognormal noise (sigma 0.2);
  copies drawn multinomially from the weights.
- clusters: 32 GPUs (4 nodes) with 32 redundant slots; 256 GPUs (32 nodes) with 256
  (DeepSeek) or 128 (Kimi) redundant slots.

For every case it prints the greedy's mean and minimum balancedness and its time (all
layers, this process: ``tests/oracles/eplb_greedy.py``, DeepSeek's EPLB recipe), then for
each time limit (default 0.1, 1, 5, 30 s for all layers together) ``place``'s mean and
minimum balancedness, worst gap to the lower bound, layers proven optimal, and wall time.
One worker; seed 0.

    python -m benchmarks.bench_place_anytime [--limits 0.1 1 5 30] [--only deepseek]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from optimizer.place import PlaceSpec, Settings, place
from tests.oracles.eplb_greedy import balancedness, greedy_place

TOKENS = 131_072
SHAPES = {"deepseek": (58, 256), "kimi": (60, 384)}
CLUSTERS = {"deepseek": [(32, 32, 4), (256, 256, 32)], "kimi": [(32, 32, 4), (256, 128, 32)]}


def synthetic_loads(layers: int, experts: int, skew: str, seed: int) -> np.ndarray:
    """[layers][experts] int64 routed token copies (the module doc's recipe)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((layers, experts), dtype=np.int64)
    for layer in range(layers):
        if skew == "mild":
            w = rng.lognormal(0.0, 0.6, experts)
        else:
            s = rng.uniform(0.9, 1.2)
            w = (1.0 + rng.permutation(experts)) ** -s * rng.lognormal(0.0, 0.2, experts)
        out[layer] = rng.multinomial(TOKENS, w / w.sum())
    return out


def eplb(counts: np.ndarray, G: int, R: int) -> tuple[float, float, float]:
    """(mean, min balancedness, seconds) of the greedy over all layers."""
    start = time.perf_counter()
    bal = [balancedness(row.tolist(), greedy_place(row.tolist(), G, R)) for row in counts]
    return float(np.mean(bal)), float(np.min(bal)), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limits", type=float, nargs="+", default=[0.1, 1.0, 5.0, 30.0])
    ap.add_argument("--only", choices=sorted(SHAPES), default=None)
    ap.add_argument("--skew", choices=["mild", "heavy"], default=None)
    args = ap.parse_args()
    print(f"{'case':<34} {'limit_s':>7} {'bal_mean':>9} {'bal_min':>9} {'worst_gap':>9} "
          f"{'optimal':>7} {'wall_s':>7}")
    for shape, (layers, experts) in SHAPES.items():
        if args.only and shape != args.only:
            continue
        for skew in ("mild", "heavy"):
            if args.skew and skew != args.skew:
                continue
            counts = synthetic_loads(layers, experts, skew, seed=1 if skew == "mild" else 2)
            for G, R, K in CLUSTERS[shape]:
                name = f"{shape} {skew} {G}gpu R{R}"
                mean, low, secs = eplb(counts, G, R)
                print(f"{name:<34} {'eplb':>7} {mean:>9.5f} {low:>9.5f} {'':>9} {'':>7} {secs:>7.2f}")
                spec = PlaceSpec(G, R, K)
                for limit in args.limits:
                    res = place(counts, list(range(layers)), spec, Settings(time_limit_s=limit))
                    doc = res.to_json()
                    proven = sum(lp.proven for lp in res.layers)
                    print(f"{name:<34} {limit:>7.1f} {doc['balancedness_mean']:>9.5f} "
                          f"{doc['balancedness_min']:>9.5f} {100 * doc['worst_gap']:>8.3f}% "
                          f"{proven:>3}/{layers:<3} {res.wall_s:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
