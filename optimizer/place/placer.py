"""Expert placement for measured loads (``moeopt place``): experts and their replicas onto
EP ranks, one MoE layer at a time, minimizing the hottest rank's load.

Problem (per layer; layers are independent)
- ``n[e]``: routed token copies of expert ``e`` (int >= 0), ``E`` experts.
- ``G`` EP ranks, ``R`` redundant slots: ``E + R`` slots, ``S = (E + R) / G`` per rank.
- Replica counts ``r[e] >= 1`` with ``sum r = E + R``; the replicas of one expert sit on
  distinct ranks (and, with ``spread_replicas``, on distinct nodes).
- Dispatch rule of the runtimes: a replicated expert's tokens split evenly over its
  replicas, so rank ``g`` carries ``load[g] = sum_{e on g} n[e] / r[e]`` tokens.
- Primary objective: minimize ``max_g load[g]``. Balancedness = mean / max, where
  ``mean = sum n / G`` does not depend on the placement.
- Nodes: ranks ``[k*G/K, (k+1)*G/K)`` form node ``k``. Secondary objective (``K > 1``):
  minimize the tokens that cross nodes, measured under a uniform-source, node-local
  dispatch assumption: the tokens of expert ``e`` originate evenly on all ``K`` nodes and a
  token is served on its own node when that node holds a replica of ``e``; otherwise it
  crosses. With ``h[e]`` = nodes holding ``e``: ``cross = sum_e n[e] * (1 - h[e] / K)``
  (linear in ``h``). Note this measure and the even-split rule of the primary objective
  are two models of the same runtime; the measure only ranks placements.

Lower bound (valid for every placement): ``max(mean, w* + fill, pigeonhole)``, where
``w*`` is the least possible heaviest per-replica load ``min_r max_e n[e]/r[e]`` (exact by
the greedy "next replica to the heaviest per-replica load"), ``fill`` the sum of the S-1
smallest ``n[f] / max_replicas`` (the other slots of that replica's rank), and for ``R = 0``
some rank holds ``j+1`` of the ``j*G+1`` heaviest experts. CP-SAT's proven bound is added
when the layer's exact model was solved (exact weights; with rounded-up weights the bound
is lowered by S units, so it stays a bound on the real loads).

Method per layer
1. Replica counts by the min-max greedy; heaviest replica first onto the least-loaded rank
   with a free, allowed slot (``_pack``, the EPLB recipe); then a descent that re-partitions
   the hottest rank with a cooler one (all 2S-choose-S splits for S <= 9, else swaps).
2. Small layers (``exact_size`` <= ``EXACT_MAX_LITERALS`` assignment literals): the full
   CP-SAT model. Replica counts are variables (one-hot ``r[e] = c`` over ``[lo, hi]``, where
   ``lo = ceil(n/UB)`` for the incumbent's max load UB), ``z[e,g,c]`` = "rank g holds a
   replica of e and e has c replicas" makes the per-replica load ``n/c`` linear; symmetry
   breaking (nodes, and ranks inside a node, numbered by first use, heaviest expert first)
   and the heuristic plan as a complete hint; exact integer weights (``n * lcm / c``), so
   OPTIMAL is a proof for the real loads. With nodes and replicas, a second lexicographic
   phase keeps the max load and maximizes node coverage ``sum n[e] h[e]``.
3. Large layers (DeepSeek-V3 size: 256 experts x 64 ranks is ~16k literals; CP-SAT's
   presolve alone outlasts a 1 s per-layer budget there and its LP bound is just the mean):
   iterated local search. A move turns one replica of an expert with >= 2 replicas into a
   new replica of another expert (replica counts change; ``_count_move``), the descent
   repairs, and the move is kept if (max load, ranks at max) improved. Then a CP-SAT
   assignment of whole ranks to nodes for the secondary objective (moving a whole rank
   keeps every load), so in this mode the secondary is lexicographic only over that
   relabelling, not over all plans of the same max load.
A layer's status is "optimal" when CP-SAT proved it or its max load meets the lower bound.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from optimizer.errors import InputError

log = logging.getLogger(__name__)

SCALE = 1_000_000            # node-coverage weights: the heaviest expert's tokens become this
EXACT_MAX_LITERALS = 6000    # exact model when its assignment literals stay below this
EXACT_MAX_WEIGHT = 10**9     # exact integer weights up to this, else rounded up (bound kept sound)
ILS_STALL = 400              # local-search tries without improvement before a layer stops early
REL_TOL = 1e-12              # float comparisons of loads


# --------------------------------------------------------------------------- problem

@dataclass(frozen=True)
class PlaceSpec:
    """The cluster side of a placement problem."""

    num_ranks: int
    redundant: int = 0
    num_nodes: int = 1
    spread_replicas: bool = False

    def max_replicas(self) -> int:
        """Replicas one expert may have: one per rank (per node with ``spread_replicas``)."""
        return min(self.num_ranks, self.num_nodes) if self.spread_replicas else self.num_ranks

    def slots_per_rank(self, num_experts: int) -> int:
        return (num_experts + self.redundant) // self.num_ranks

    def check(self, num_experts: int) -> None:
        """One-line InputError for an impossible combination of experts, ranks and nodes."""
        g, r, k = self.num_ranks, self.redundant, self.num_nodes
        if g < 1 or r < 0 or k < 1:
            raise InputError(f"--ep={g}, --redundant={r}, --nodes={k}: need ep >= 1, redundant >= 0, nodes >= 1")
        if (num_experts + r) % g:
            raise InputError(f"--redundant={r}: experts + redundant = {num_experts} + {r} = {num_experts + r} "
                             f"is not divisible by --ep={g} (every rank holds the same number of slots)")
        if g % k:
            raise InputError(f"--nodes={k}: does not divide --ep={g} (nodes hold equal, contiguous rank blocks)")
        cap = self.max_replicas()
        if num_experts + r > num_experts * cap:
            rule = "one per node (--spread-replicas)" if self.spread_replicas else "one per rank"
            raise InputError(f"--redundant={r}: {num_experts} experts with at most {cap} replicas each "
                             f"({rule}) fill at most {num_experts * cap} slots, not {num_experts + r}")


@dataclass(frozen=True)
class Settings:
    """Solver settings: total time budget in seconds, CPU workers, random seed."""

    time_limit_s: float = 30.0
    workers: int = 1
    seed: int = 0


@dataclass
class LayerPlacement:
    """One layer's plan. Loads are routed token copies (tokens x top_k share)."""

    layer: int
    ranks: list[list[int]]          # [G][S] expert ids per rank, sorted
    max_load: float
    mean_load: float
    lower_bound: float
    proven: bool                    # max_load is optimal (CP-SAT proof or bound met)
    method: str                     # "exact" (full CP-SAT model) | "search" (local search)
    cross_node_tokens: float | None = None
    wall_s: float = 0.0
    greedy_max_load: float = 0.0    # the initial packing, for the log

    @property
    def balancedness(self) -> float:
        return self.mean_load / self.max_load if self.max_load > 0 else 1.0

    @property
    def gap(self) -> float:
        """Relative distance of the max load to the lower bound (0 = proven optimal)."""
        if self.proven or self.max_load <= 0:
            return 0.0
        return max(0.0, (self.max_load - self.lower_bound) / self.max_load)


@dataclass
class Placement:
    """All layers' plans."""

    spec: PlaceSpec
    num_experts: int
    layers: list[LayerPlacement]
    wall_s: float
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "optimal" if all(lp.proven for lp in self.layers) else "feasible"

    def to_json(self) -> dict:
        """The ``moeopt place --format json`` document (interface.md, "Placement output")."""
        spec = self.spec
        layers = []
        for lp in self.layers:
            doc = {"layer": lp.layer, "ranks": lp.ranks, "max_load": _r(lp.max_load),
                   "mean_load": _r(lp.mean_load), "lower_bound": _r(lp.lower_bound),
                   "balancedness": round(lp.balancedness, 6), "gap": round(lp.gap, 6),
                   "status": "optimal" if lp.proven else "feasible", "method": lp.method}
            if lp.cross_node_tokens is not None:
                doc["cross_node_tokens"] = _r(lp.cross_node_tokens)
            layers.append(doc)
        bal = [lp.balancedness for lp in self.layers]
        out = {"num_ranks": spec.num_ranks, "num_nodes": spec.num_nodes,
               "slots_per_rank": spec.slots_per_rank(self.num_experts),
               "num_experts": self.num_experts, "redundant": spec.redundant,
               "spread_replicas": spec.spread_replicas, "layers": layers,
               "balancedness_mean": round(sum(bal) / len(bal), 6),
               "balancedness_min": round(min(bal), 6),
               "worst_gap": round(max(lp.gap for lp in self.layers), 6),
               "status": self.status, "wall_s": round(self.wall_s, 3),
               "load_unit": "routed token copies; a replicated expert's tokens split evenly over its replicas",
               "lower_bound_rule": ("max(mean, least possible heaviest replica + lightest fill, "
                                    "pigeonhole), and CP-SAT's bound where the exact model ran")}
        if spec.num_nodes > 1:
            out["cross_node_tokens"] = _r(sum(lp.cross_node_tokens or 0.0 for lp in self.layers))
            out["cross_node_rule"] = ("tokens of an expert originate evenly on all nodes and stay on a "
                                      "node holding a replica; cross = sum n_e (1 - nodes_e / num_nodes)")
        out.update(self.extra)
        return out


def _r(x: float) -> float:
    return round(float(x), 3)


# --------------------------------------------------------------------------- entry point

def place(counts: np.ndarray, layer_ids: list[int], spec: PlaceSpec, settings: Settings) -> Placement:
    """Placement of every layer of ``counts`` ([layers][experts] int tokens).

    The time budget is shared: each layer gets (time left) / (layers left) of its worker;
    with ``workers > 1`` and several layers, layers are split round-robin over that many
    processes (each CP-SAT single-threaded), otherwise CP-SAT uses ``workers`` threads.
    """
    start = time.monotonic()
    counts = np.asarray(counts, dtype=np.int64)
    num_layers, num_experts = counts.shape
    spec.check(num_experts)
    deadline = start + settings.time_limit_s
    groups = max(1, min(settings.workers, num_layers))
    if groups == 1:
        results = _run_group(counts, layer_ids, list(range(num_layers)), spec, settings, deadline)
    else:
        results = _run_parallel(counts, layer_ids, spec, settings, deadline, groups)
    results.sort(key=lambda lp: layer_ids.index(lp.layer))
    return Placement(spec, num_experts, results, time.monotonic() - start)


def _run_group(counts, layer_ids, rows: list[int], spec: PlaceSpec, settings: Settings,
               deadline: float, threads: int | None = None) -> list[LayerPlacement]:
    out = []
    for i, row in enumerate(rows):
        share = max(0.0, deadline - time.monotonic()) / (len(rows) - i)
        out.append(solve_layer(counts[row], layer_ids[row], spec, share,
                               threads or settings.workers, settings.seed))
    return out


def _run_parallel(counts, layer_ids, spec, settings, deadline, groups) -> list[LayerPlacement]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    rows = [list(range(g, counts.shape[0], groups)) for g in range(groups)]
    try:
        pool = ProcessPoolExecutor(max_workers=groups, mp_context=mp.get_context("fork"))
    except (OSError, ValueError) as exc:  # no fork or no semaphores here: one process
        log.warning("place: no worker processes (%s); solving layers one by one", exc)
        return _run_group(counts, layer_ids, list(range(counts.shape[0])), spec, settings, deadline)
    # CLOCK_MONOTONIC is system-wide on Linux, so the deadline means the same in children.
    with pool:
        futures = [pool.submit(_run_group, counts, layer_ids, r, spec, settings, deadline, 1)
                   for r in rows]
        return [lp for f in futures for lp in f.result()]


# --------------------------------------------------------------------------- one layer

def solve_layer(counts: np.ndarray, layer: int, spec: PlaceSpec, time_limit_s: float,
                workers: int = 1, seed: int = 0) -> LayerPlacement:
    """The placement of one layer (``counts``: [E] int tokens) within ``time_limit_s``."""
    start = time.monotonic()
    deadline = start + max(time_limit_s, 0.0)
    st = _Layer(np.asarray(counts, dtype=np.int64), spec, seed + 7919 * layer)
    greedy_max = st.max_load()
    st.descent(deadline)
    exact = st.exact_size() <= EXACT_MAX_LITERALS
    method, cp_proven, cp_bound = ("exact" if exact else "search"), False, 0.0
    nodes = spec.num_nodes > 1 and spec.redundant > 0  # with single replicas, no choice
    if st.max_load() > st.lower * (1 + REL_TOL):
        if exact:
            if spec.redundant:  # a better hint first, then the proof
                st.ils(start + 0.5 * (deadline - start), max_stall=ILS_STALL // 8)
            cp_proven, cp_bound = st.exact(deadline, workers)  # its phase 2 handles nodes
        else:
            st.ils(deadline - (0.1 * (deadline - time.monotonic()) if nodes else 0.0))
    if nodes:
        st.nodes_by_bundles(deadline)
    max_load = st.max_load()
    lower = max(st.lower, cp_bound)
    proven = cp_proven or max_load <= lower * (1 + REL_TOL)
    if proven:
        lower = max_load  # CP-SAT proved optimality, or the bound is met up to float noise
    ranks = [sorted(int(e) for e in row) for row in st.R]
    return LayerPlacement(layer=layer, ranks=ranks, max_load=max_load, mean_load=st.mean,
                          lower_bound=min(lower, max_load), proven=proven, method=method,
                          cross_node_tokens=st.cross_node_tokens() if spec.num_nodes > 1 else None,
                          wall_s=time.monotonic() - start, greedy_max_load=greedy_max)


def min_max_replicas(loads, num_slots: int, cap: int) -> list[int]:
    """[E] replica counts summing to ``num_slots`` (each in [1, cap]) that minimize the
    heaviest per-replica load ``max_e loads[e] / r[e]``: every further replica goes to the
    currently heaviest per-replica load (optimal for this min-max; ties: lower id)."""
    count = [1] * len(loads)
    heap = [(-float(n), e) for e, n in enumerate(loads) if cap > 1]
    heapq.heapify(heap)
    for _ in range(num_slots - len(loads)):
        _, e = heapq.heappop(heap)
        count[e] += 1
        if count[e] < cap:
            heapq.heappush(heap, (-float(loads[e]) / count[e], e))
    return count


def lower_bound(loads, spec: PlaceSpec) -> float:
    """A load no placement's hottest rank can go below (tokens): see the module doc."""
    n = [float(x) for x in loads]
    num_experts, g = len(n), spec.num_ranks
    cap = spec.max_replicas()
    count = min_max_replicas(n, num_experts + spec.redundant, cap)
    slots = spec.slots_per_rank(num_experts)
    # the rank holding the heaviest replica (>= w*) fills its other S-1 slots with replicas
    # of other experts, each at least n_f / cap
    fill = sum(sorted(x / cap for x in n)[: slots - 1])
    bound = max(sum(n) / g, max(x / c for x, c in zip(n, count)) + fill)
    if spec.redundant == 0:
        p = sorted(n, reverse=True)
        j = 1
        while j * g + 1 <= num_experts:  # some rank holds j+1 of the j*G+1 heaviest experts
            bound = max(bound, sum(p[j * g - j: j * g + 1]))
            j += 1
    return bound


class _Layer:
    """Search state of one layer: replica counts ``count`` [E] and the plan ``R`` [G][S]."""

    def __init__(self, n: np.ndarray, spec: PlaceSpec, seed: int):
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
        self.lower = lower_bound(n, spec)
        self.rng = random.Random(seed)
        self.seed = seed
        self.count = np.array(min_max_replicas(self.n, self.E + spec.redundant, self.cap), dtype=np.int64)
        self.R = np.array(_pack(self.n, self.count, spec, self.S), dtype=np.int64)

    # ---- evaluation
    def loads(self, R=None, count=None) -> np.ndarray:
        R = self.R if R is None else R
        count = self.count if count is None else count
        return (self.n[R] / count[R]).sum(axis=1)

    def max_load(self) -> float:
        return float(self.loads().max())

    def cross_node_tokens(self) -> float:
        held = np.zeros((self.E, self.K), dtype=bool)
        for g in range(self.G):
            held[self.R[g], self.node[g]] = True
        return float((self.n * (1.0 - held.sum(axis=1) / self.K)).sum())

    def _key(self, loads: np.ndarray) -> tuple[float, int]:
        """Lexicographic quality: hottest load, then how many ranks share it."""
        top = float(loads.max())
        return top, int((loads >= top * (1 - 1e-9)).sum())

    # ---- pairwise descent
    def descent(self, deadline: float) -> None:
        """Repeatedly re-partition the hottest rank with a cooler one while that lowers the
        hottest rank: for S <= 9 every split of the 2S replicas into two sides of S is
        scored for all cooler ranks at once (coolest chunk first) and the best is taken;
        for larger S, single swaps with the coolest ranks first."""
        if self.G < 2:
            return
        combos = _combos(self.S) if self.S <= 9 else None
        chunk = self.G if self.S <= 6 else 8
        while time.monotonic() < deadline:
            loads = self.loads()
            a = int(np.argmax(loads))
            order = np.argsort(loads, kind="stable")
            cooler = order[loads[order] < loads[a] * (1 - REL_TOL)].tolist()
            if combos is None:
                done = any(self._repartition(a, b, loads[a]) for b in cooler)
            else:
                done = any(self._best_split(a, cooler[i:i + chunk], loads[a], combos)
                           for i in range(0, len(cooler), chunk))
            if not done:
                return

    def _best_split(self, a: int, partners: list[int], top: float, combos) -> bool:
        """The best re-partition of rank ``a`` with any of ``partners``; applied if it
        lowers ``top``."""
        inA, inA_f, moved = combos
        S = self.S
        Rb = self.R[partners]
        pe = np.concatenate([np.broadcast_to(self.R[a], Rb.shape), Rb], axis=1)
        pw = self.n[pe] / self.count[pe]
        sa = pw @ inA_f.T
        score = np.maximum(sa, pw.sum(axis=1, keepdims=True) - sa)
        shared = np.isin(Rb, self.R[a])
        check = shared.any(axis=1)
        if self.spec.spread_replicas:
            check |= self.node[partners] != self.node[a]
        flip: dict[int, np.ndarray] = {}
        for p in np.nonzero(check)[0]:
            b = partners[p]
            ok1 = ok2 = None
            for j in np.nonzero(shared[p])[0]:  # two replicas of one expert: one on each side
                i = int(np.nonzero(self.R[a] == Rb[p, j])[0][0])
                split = inA[:, i] != inA[:, S + j]
                ok1 = split if ok1 is None else ok1 & split
            ok2 = ok1
            movable = self._movable(pe[p], a, b)
            if not movable.all():  # orientation 1: side A -> rank a; orientation 2: A -> b
                frozen = ~movable
                good1 = ~moved[:, frozen].any(axis=1)
                good2 = moved[:, frozen].all(axis=1)
                ok1 = good1 if ok1 is None else ok1 & good1
                ok2 = good2 if ok2 is None else ok2 & good2
            if ok1 is not None:
                score[p] = np.where(ok1 | ok2, score[p], np.inf)
                flip[p] = ~ok1
        p, k = np.unravel_index(int(np.argmin(score)), score.shape)
        if not score[p, k] < top * (1 - 1e-9):
            return False
        side = ~inA[k] if p in flip and flip[p][k] else inA[k]
        b = partners[p]
        self.R[a], self.R[b] = pe[p][side], pe[p][~side]
        return True

    def _repartition(self, a: int, b: int, top: float) -> bool:
        """Best single swap between ranks a and b (for S > 9)."""
        pe = np.concatenate([self.R[a], self.R[b]])
        pw = self.n[pe] / self.count[pe]
        return self._swap(a, b, pe, pw, self._movable(pe, a, b), top)

    def _swap(self, a, b, pe, pw, movable, top) -> bool:
        S = self.S
        la, lb = pw[:S].sum(), pw[S:].sum()
        best, pick = top * (1 - 1e-9), None
        for i in range(S):
            if not movable[i] or pe[i] in pe[S:]:
                continue
            for j in range(S, 2 * S):
                if not movable[j] or pe[j] in pe[:S]:
                    continue
                d = pw[i] - pw[j]
                worst = max(la - d, lb + d)
                if worst < best:
                    best, pick = worst, (i, j)
        if pick is None:
            return False
        i, j = pick
        self.R[a, i], self.R[b, j - S] = pe[j], pe[i]
        return True

    def _movable(self, pe: np.ndarray, a: int, b: int) -> np.ndarray:
        """May pool item i change rank (a <-> b) without two replicas on one node?"""
        out = np.ones(len(pe), dtype=bool)
        if not self.spec.spread_replicas or self.node[a] == self.node[b]:
            return out
        S = self.S
        for i, e in enumerate(pe):
            if self.count[e] < 2:
                continue
            dest = self.node[b] if i < S else self.node[a]
            src = a if i < S else b
            holders = np.nonzero((self.R == e).any(axis=1))[0]
            out[i] = not any(self.node[h] == dest and h not in (a, b) for h in holders if h != src)
        return out

    # ---- exact model
    def _domains(self, ub: float) -> tuple[list[range], list[int]]:
        """Replica-count domains [lo, hi] valid for every plan with max load <= ub, and
        the symmetry order (heaviest first)."""
        lo = [max(1, math.ceil(x / ub * (1 - 1e-12))) if ub > 0 else 1 for x in self.n]
        slack = self.E + self.spec.redundant - sum(lo)
        doms = [range(l, min(self.cap, l + slack) + 1) for l in lo]
        order = sorted(range(self.E), key=lambda e: (-self.ni[e], e))
        return doms, order

    def _allowed(self, doms, order) -> dict[int, list[int]]:
        """Symmetry breaking: relabel nodes, and ranks inside a node, by first use when the
        experts are scanned heaviest first; then the i-th expert can only use nodes and
        local ranks below the largest number of replicas the first i experts can have."""
        per = self.G // self.K
        allowed, cum = {}, 0
        for e in order:
            cum += doms[e][-1]
            allowed[e] = [g for g in range(self.G) if g // per < cum and g % per < cum]
        return allowed

    def exact_size(self) -> int:
        doms, order = self._domains(self.max_load())
        allowed = self._allowed(doms, order)
        return sum(len(doms[e]) * len(allowed[e]) for e in range(self.E))

    def exact(self, deadline: float, workers: int) -> tuple[bool, float]:
        """Solve the layer's full model; returns (proved optimal, CP-SAT bound in tokens)."""
        ub = self.max_load()
        doms, order = self._domains(ub)
        allowed = self._allowed(doms, order)
        lcm = math.lcm(*{c for d in doms for c in d})
        if int(self.ni.max()) * lcm <= EXACT_MAX_WEIGHT:
            scale, slack = lcm, 0      # weights n*lcm/c are exact integers
            weight = {(e, c): int(self.ni[e]) * lcm // c for e in range(self.E) for c in doms[e]}
        else:                          # rounded up: the real max >= (model max - S) / scale
            scale, slack = SCALE / float(self.n.max()), self.S
            weight = {(e, c): math.ceil(self.n[e] * scale / c) for e in range(self.E) for c in doms[e]}
        hint_R = self._canonical(order)
        model = cp_model.CpModel()
        z, y = {}, {}
        on_rank = [[] for _ in range(self.G)]
        on_node: dict[tuple[int, int], list] = {}
        for e in range(self.E):
            choices = {c: (model.new_bool_var(f"r[{e}]={c}") if len(doms[e]) > 1 else 1) for c in doms[e]}
            y[e] = choices
            if len(doms[e]) > 1:
                model.add_exactly_one(choices.values())
            per_rank = {g: [] for g in allowed[e]}
            for c in doms[e]:
                lits = []
                for g in allowed[e]:
                    v = model.new_bool_var(f"z[{e},{g},{c}]")
                    z[e, g, c] = v
                    lits.append(v)
                    per_rank[g].append(v)
                    on_rank[g].append((weight[e, c], v))
                    on_node.setdefault((e, int(self.node[g])), []).append(v)
                    if len(doms[e]) > 1:
                        model.add_implication(v, choices[c])
                model.add(sum(lits) == c * choices[c])
            for g, lits in per_rank.items():
                if len(lits) > 1:
                    model.add_at_most_one(lits)
        model.add(sum(c * (v if not isinstance(v, int) else 1) for e in range(self.E)
                      for c, v in y[e].items()) == self.E + self.spec.redundant)
        if self.spec.spread_replicas:
            for lits in on_node.values():
                if len(lits) > 1:
                    model.add(sum(lits) <= 1)
        ub_int = max(sum(weight[int(e), int(self.count[e])] for e in row) for row in hint_R)
        top = model.new_int_var(0, int(ub_int), "max_load")
        for g in range(self.G):
            model.add(sum(v for _, v in on_rank[g]) == self.S)
            model.add(sum(int(w) * v for w, v in on_rank[g]) <= top)
        model.minimize(top)
        held = {(e, int(g)) for g in range(self.G) for e in hint_R[g]}
        for (e, g, c), v in z.items():
            model.add_hint(v, (e, g) in held and c == self.count[e])
        for e, choices in y.items():
            for c, v in choices.items():
                if not isinstance(v, int):
                    model.add_hint(v, c == self.count[e])
        model.add_hint(top, int(ub_int))
        two_phase = self.K > 1 and self.spec.redundant > 0
        budget = deadline - time.monotonic()
        solver = _solver(0.75 * budget if two_phase else budget, workers, self.seed)
        status = solver.solve(model)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return False, 0.0
        proven = status == cp_model.OPTIMAL and slack == 0
        bound = (solver.best_objective_bound - slack) / scale
        sol = self._read(solver, z, y)
        if self._key(self.loads(*sol)) <= self._key(self.loads()):
            self.R, self.count = sol
        if two_phase:
            self._exact_phase2(model, solver, z, y, top, on_node, deadline, workers)
        return proven, bound

    def _exact_phase2(self, model, solver, z, y, top, on_node, deadline, workers) -> None:
        """Keep the max load, maximize node coverage sum_e n_e * (nodes holding e)."""
        best = int(solver.value(top))
        values = {k: solver.boolean_value(v) for k, v in z.items()}
        model.clear_hints()
        for k, v in z.items():
            model.add_hint(v, values[k])
        for e, choices in y.items():
            for c, v in choices.items():
                if not isinstance(v, int):
                    model.add_hint(v, solver.boolean_value(v))
        model.add(top <= best)
        model.add_hint(top, best)
        covered = {(e, int(self.node[g])) for (e, g, _), v in values.items() if v}
        weight = self._coverage_weights()
        terms = []
        for (e, k), lits in on_node.items():
            if weight[e] == 0 or max(c for c in y[e]) < 2:
                continue
            u = model.new_bool_var(f"covers[{e},{k}]")
            model.add(u <= sum(lits))
            model.add_hint(u, (e, k) in covered)
            terms.append((weight[e], u))
        if not terms:
            return
        model.maximize(sum(w * u for w, u in terms))
        solver2 = _solver(deadline - time.monotonic(), workers, self.seed)
        status = solver2.solve(model)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            sol = self._read(solver2, z, y)
            if self._key(self.loads(*sol))[0] <= self.max_load() * (1 + 1e-9):
                self.R, self.count = sol

    def _coverage_weights(self) -> np.ndarray:
        top = int(self.ni.max())
        if top <= SCALE:
            return self.ni.copy()
        return np.ceil(self.n * SCALE / top).astype(np.int64)

    def _read(self, solver, z, y) -> tuple[np.ndarray, np.ndarray]:
        rows = [[] for _ in range(self.G)]
        count = np.zeros(self.E, dtype=np.int64)
        for (e, g, c), v in z.items():
            if solver.boolean_value(v):
                rows[g].append(e)
                count[e] += 1
        return np.array(rows, dtype=np.int64), count

    def _canonical(self, order: list[int]) -> np.ndarray:
        """The current plan with nodes, and ranks within nodes, relabelled by first use in
        ``order`` (the form the symmetry breaking of ``_allowed`` admits)."""
        per = self.G // self.K
        node_label: dict[int, int] = {}
        local_next = [0] * self.K
        rank_label: dict[int, int] = {}
        holders: dict[int, list[int]] = {}
        for g in range(self.G):
            for e in self.R[g]:
                holders.setdefault(int(e), []).append(g)
        for e in order:
            for g in holders.get(e, []):
                if g in rank_label:
                    continue
                k = int(self.node[g])
                if k not in node_label:
                    node_label[k] = len(node_label)
                nk = node_label[k]
                rank_label[g] = nk * per + local_next[nk]
                local_next[nk] += 1
        for g in range(self.G):  # ranks holding nothing new (cannot happen: S >= 1)
            if g not in rank_label:
                k = int(self.node[g])
                if k not in node_label:
                    node_label[k] = len(node_label)
                nk = node_label[k]
                rank_label[g] = nk * per + local_next[nk]
                local_next[nk] += 1
        out = np.empty_like(self.R)
        for g, ng in rank_label.items():
            out[ng] = self.R[g]
        self.R = out
        return out

    # ---- iterated local search
    def ils(self, deadline: float, max_stall: int = ILS_STALL) -> None:
        """Iterated local search: perturb the best plan by one replica-count move (a
        replica of an expert with >= 2 replicas becomes a new replica of an expert on the
        hottest rank, or of a heavy expert), re-run the descent, keep the result if the
        (max load, ranks at max) pair improved. Without redundant slots the perturbation
        is a random swap with the hottest rank. Stops at the deadline, at the lower bound,
        or after ``max_stall`` tries in a row without improvement."""
        best_R, best_count = self.R.copy(), self.count.copy()
        best_key = self._key(self.loads())
        stall = 0
        while stall < max_stall and time.monotonic() < deadline:
            if best_key[0] <= self.lower * (1 + REL_TOL):
                break
            self.R, self.count = best_R.copy(), best_count.copy()
            moved = self._count_move() if self.spec.redundant else self._swap_move()
            if not moved:
                stall += 1
                continue
            self.descent(deadline)
            key = self._key(self.loads())
            if key < best_key:
                best_R, best_count, best_key, stall = self.R.copy(), self.count.copy(), key, 0
            else:
                stall += 1
        self.R, self.count = best_R, best_count

    def _count_move(self) -> bool:
        """One replica of X (count >= 2) on rank h becomes a new replica of Y. Three kinds,
        drawn at random: (a) Y a heavy expert of the hottest rank (weighted by its replica
        load), X a donor whose other replicas grow least; (b) h the hottest rank, X one of
        its replicated experts, Y a light expert; (c) X, Y uniform."""
        rng = self.rng
        loads = self.loads()
        a = int(np.argmax(loads))
        per_replica = self.n / self.count
        multi = np.nonzero(self.count >= 2)[0]
        if len(multi) == 0:
            return False
        kind = rng.random()
        h = None
        if kind < 0.5:
            hot = [int(e) for e in self.R[a] if self.count[e] < self.cap]
            if not hot:
                return False
            y = rng.choices(hot, weights=[per_replica[e] + 1e-12 for e in hot])[0]
            cost = self.n[multi] / (self.count[multi] * (self.count[multi] - 1))
            x = int(rng.choices(list(multi), weights=list(1.0 / (cost + 1e-9 * self.mean + 1e-12)))[0])
        elif kind < 0.75:
            on_a = [int(e) for e in self.R[a] if self.count[e] >= 2]
            if not on_a:
                return False
            x, h = on_a[rng.randrange(len(on_a))], a
            light = np.argsort(self.n / (self.count + 1), kind="stable")
            light = [int(e) for e in light[:64] if e not in self.R[a] and self.count[e] < self.cap]
            if not light:
                return False
            y = light[rng.randrange(len(light))]
        else:
            y = rng.randrange(self.E)
            x = int(multi[rng.randrange(len(multi))])
        if x == y or self.count[y] >= self.cap:
            return False
        has_y = (self.R == y).any(axis=1)
        y_nodes = set(self.node[has_y].tolist()) if self.spec.spread_replicas else set()
        if h is None:
            hs = [g for g in range(self.G)
                  if not has_y[g] and x in self.R[g] and int(self.node[g]) not in y_nodes]
            if not hs:
                return False
            h = min(hs, key=lambda g: loads[g]) if rng.random() < 0.5 else hs[rng.randrange(len(hs))]
        elif has_y[h] or int(self.node[h]) in y_nodes:
            return False
        self.R[h, int(np.nonzero(self.R[h] == x)[0][0])] = y
        self.count[x] -= 1
        self.count[y] += 1
        return True

    def _swap_move(self) -> bool:
        """Swap a random item of the hottest rank with a random item of another rank."""
        if self.G < 2:
            return False
        rng = self.rng
        a = int(np.argmax(self.loads()))
        b = rng.choice([g for g in range(self.G) if g != a])
        i, j = rng.randrange(self.S), rng.randrange(self.S)
        x, y = int(self.R[a, i]), int(self.R[b, j])
        if x == y or x in self.R[b] or y in self.R[a]:
            return False
        if self.spec.spread_replicas and self.node[a] != self.node[b] and (self.count[x] > 1 or self.count[y] > 1):
            return False
        self.R[a, i], self.R[b, j] = y, x
        return True

    # ---- secondary objective for large layers
    def nodes_by_bundles(self, deadline: float) -> None:
        """Assign whole ranks to nodes (every load unchanged) to maximize node coverage
        ``sum_e n_e * nodes_e``; keeps replicas on distinct nodes with ``spread_replicas``."""
        limit = deadline - time.monotonic()
        if limit <= 0.01:
            return
        G, K, per = self.G, self.K, self.G // self.K
        holders: dict[int, list[int]] = {}
        for g in range(G):
            for e in self.R[g]:
                holders.setdefault(int(e), []).append(g)
        multi = {e: hs for e, hs in holders.items() if len(hs) > 1}
        if not multi:
            return
        weight = self._coverage_weights()
        model = cp_model.CpModel()
        b = {(g, k): model.new_bool_var(f"rank{g}@node{k}") for g in range(G) for k in range(K) if k <= g}
        for g in range(G):
            model.add_exactly_one(b[g, k] for k in range(K) if (g, k) in b)
        for k in range(K):
            model.add(sum(b[g, k] for g in range(G) if (g, k) in b) == per)
        terms = []
        for e, hs in multi.items():
            covers = []
            for k in range(K):
                lits = [b[g, k] for g in hs if (g, k) in b]
                if not lits:
                    continue
                if self.spec.spread_replicas:
                    model.add(sum(lits) <= 1)
                u = model.new_bool_var("")
                model.add(u <= sum(lits))
                covers.append(u)
                terms.append((int(weight[e]), u, e, k))
            model.add(sum(covers) <= min(len(hs), K))  # redundant: lets CP-SAT prove the ideal
        model.maximize(sum(w * u for w, u, _, _ in terms))
        # hint: the current assignment relabelled so that rank g sits on a node <= g
        cur = self._bundle_hint()
        for (g, k), v in b.items():
            model.add_hint(v, cur[g] == k)
        for w, u, e, k in terms:
            model.add_hint(u, any(cur[g] == k for g in multi[e]))
        solver = _solver(limit, 1, self.seed)
        status = solver.solve(model)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return
        before = self.cross_node_tokens()
        slots = [0] * K
        newR = np.empty_like(self.R)
        for g in range(G):
            k = next(k for k in range(K) if (g, k) in b and solver.boolean_value(b[g, k]))
            newR[k * per + slots[k]] = self.R[g]
            slots[k] += 1
        old = self.R
        self.R = newR
        if self.cross_node_tokens() > before + 1e-9:
            self.R = old

    def _bundle_hint(self) -> list[int]:
        """Node of each rank after relabelling nodes by first rank (so node <= rank)."""
        label: dict[int, int] = {}
        out = []
        for g in range(self.G):
            k = int(self.node[g])
            label.setdefault(k, len(label))
            out.append(label[k])
        return out


# --------------------------------------------------------------------------- helpers

def _solver(limit_s: float, workers: int, seed: int) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(limit_s, 0.01)
    solver.parameters.num_workers = max(1, workers)
    solver.parameters.random_seed = seed % (1 << 31)
    return solver


_COMBOS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _combos(S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ways to split 2S pool items (S from rank a, then S from rank b) into two sides
    of S, item 0 always on side A: (side A [C(2S-1,S-1)][2S] bool, the same as float, and
    "item changes rank when side A goes to rank a" bool)."""
    if S not in _COMBOS:
        from itertools import combinations
        rows = [(0,) + c for c in combinations(range(1, 2 * S), S - 1)]
        mask = np.zeros((len(rows), 2 * S), dtype=bool)
        mask[np.repeat(np.arange(len(rows)), S), np.array(rows).ravel()] = True
        origin_a = np.arange(2 * S) < S
        _COMBOS[S] = (mask, mask.astype(np.float64), mask != origin_a)
    return _COMBOS[S]


def _pack(n: np.ndarray, count: np.ndarray, spec: PlaceSpec, S: int) -> list[list[int]]:
    """Heaviest replica first onto the least-loaded rank with a free slot that does not
    hold the expert (nor, with ``spread_replicas``, its node). When only ranks holding the
    expert have room, another expert moves into such a rank to free a slot elsewhere; a
    round-robin layout is the last resort."""
    G = spec.num_ranks
    per = G // spec.num_nodes
    items = sorted(((n[e] / count[e], e) for e in range(len(n)) for _ in range(int(count[e]))),
                   key=lambda it: (-it[0], it[1]))
    ranks: list[list[int]] = [[] for _ in range(G)]
    total = [0.0] * G
    on_node: list[dict[int, int]] = [{} for _ in range(spec.num_nodes)]

    def fits(e: int, g: int, leaving: int | None = None) -> bool:
        if e in ranks[g]:
            return False
        if not spec.spread_replicas:
            return True
        held = on_node[g // per].get(e, 0) - (1 if leaving is not None and leaving // per == g // per else 0)
        return held == 0

    def put(e: int, g: int, sign: int) -> None:
        if sign > 0:
            ranks[g].append(e)
        else:
            ranks[g].remove(e)
        total[g] += sign * n[e] / count[e]
        node = on_node[g // per]
        node[e] = node.get(e, 0) + sign

    for _, e in items:
        free = [g for g in range(G) if len(ranks[g]) < S and fits(e, g)]
        if not free:
            move = next(((g, h, f) for g in range(G) if len(ranks[g]) < S
                         for h in range(G) if fits(e, h)
                         for f in ranks[h] if fits(f, g, leaving=h)), None)
            if move is None:
                return _round_robin(count, spec, S)
            g, h, f = move
            put(f, h, -1)
            put(f, g, +1)
            free = [h]
        put(e, min(free, key=lambda g: (total[g], g)), +1)
    return ranks


def _round_robin(count: np.ndarray, spec: PlaceSpec, S: int) -> list[list[int]]:
    """Slots filled expert by expert along a rank order that cycles over nodes: r <= G
    consecutive slots are on distinct ranks, r <= K on distinct nodes."""
    G, K = spec.num_ranks, spec.num_nodes
    per = G // K
    cycle = [k * per + l for l in range(per) for k in range(K)]
    ranks: list[list[int]] = [[] for _ in range(G)]
    p = 0
    for e in sorted(range(len(count)), key=lambda e: -int(count[e])):
        for _ in range(int(count[e])):
            ranks[cycle[p % G]].append(e)
            p += 1
    assert all(len(r) == S for r in ranks)
    return ranks
