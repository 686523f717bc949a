"""The search state of one layer: replica counts and the plan, with its evaluation.

Shapes: ``n`` [E] tokens per expert, ``count`` [E] replicas per expert, ``R`` [G][S] the
expert of every slot; ``node`` [G] the node of every rank.
"""

from __future__ import annotations

import random

import numpy as np

from optimizer.place.bounds import lower_bound, min_max_replicas
from optimizer.place.packing import pack
from optimizer.place.problem import PlaceSpec

SCALE = 1_000_000            # node-coverage weights: the heaviest expert's tokens become this


class LayerState:
    """Search state of one layer: replica counts ``count`` [E] and the plan ``R`` [G][S].
    Starts from the min-max replica counts packed heaviest replica first (``pack``); the
    packing stops at ``deadline`` (monotonic seconds) with a round-robin plan. ``packed``:
    (replica counts, plan) of that packing when already computed (``pack_many``). ``effort``:
    the deterministic budget of ``Settings.effort`` (None: the clock alone)."""

    def __init__(self, n: np.ndarray, spec: PlaceSpec, seed: int, deadline: float | None = None,
                 effort: float | None = None, packed: tuple[np.ndarray, np.ndarray] | None = None):
        self.ni = n
        self.n = n.astype(np.float64)
        self.spec = spec
        self.E = len(n)
        self.G = spec.num_ranks
        self.K = spec.num_nodes
        self.S = spec.slots_per_rank(self.E)
        self.cap = spec.max_replicas()
        self.node = np.arange(self.G) // (self.G // self.K)
        self.mean = float(self.n.sum()) / self.G
        if packed is None:
            count = min_max_replicas(self.n, self.E + spec.redundant, self.cap)
        else:
            count = packed[0].tolist()
        self.lower = lower_bound(n, spec, deadline, count)
        self.rng = random.Random(seed)
        self.seed = seed
        self.effort = effort
        self.count = np.array(count, dtype=np.int64)
        if packed is None:
            ranks, self.packing_cut = pack(self.n, self.count, spec, self.S, deadline)
        else:
            ranks, self.packing_cut = packed[1], False
        self.R = np.array(ranks, dtype=np.int64)  # packing_cut: round robin, the deadline passed

    def loads(self, R=None, count=None) -> np.ndarray:
        """[G] rank loads (tokens) of the plan ``R`` with replica counts ``count``
        (default: the current ones)."""
        R = self.R if R is None else R
        count = self.count if count is None else count
        return (self.n[R] / count[R]).sum(axis=1)

    def max_load(self) -> float:
        return float(self.loads().max())

    def cross_node_tokens(self) -> float:
        """Tokens crossing nodes: ``sum_e n[e] * (1 - nodes holding e / K)``."""
        pairs = np.unique(self.R * self.K + self.node[:, None])  # distinct (expert, node)
        nodes_holding = np.bincount(pairs // self.K, minlength=self.E)
        return float((self.n * (1.0 - nodes_holding / self.K)).sum())

    def key(self, loads: np.ndarray) -> tuple[float, int]:
        """Lexicographic quality: hottest load, then how many ranks share it."""
        top = float(loads.max())
        return top, int((loads >= top * (1 - 1e-9)).sum())

    def coverage_weights(self) -> np.ndarray:
        """[E] integer weights of node coverage: the tokens, scaled so the heaviest expert
        weighs at most ``SCALE``."""
        top = int(self.ni.max())
        if top <= SCALE:
            return self.ni.copy()
        return np.ceil(self.n * SCALE / top).astype(np.int64)
