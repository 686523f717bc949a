"""The driver of ``moeopt place``: every layer within one shared deadline.

Method per layer (layers are independent)
1. Replica counts by the min-max greedy, heaviest replica first onto the least-loaded
   rank (``packing``; all layers first and at once, ``pack_many``, so each starts from the
   EPLB recipe's plan whatever the limit), then the pairwise descent (``heuristic``).
2. Small layers (``exact_size`` <= ``EXACT_MAX_LITERALS``, and a budget of at least
   ``EXACT_S_PER_LITERAL`` per literal): the full CP-SAT model (``exact``), after a short
   local search for a better hint when there are replicas.
3. Large layers (DeepSeek-V3 size: 256 experts x 64 ranks is ~16k literals; CP-SAT's
   presolve alone outlasts a 1 s per-layer budget there and its LP bound is just the mean):
   the iterated local search, then whole ranks assigned to nodes for the secondary
   objective (``rank_nodes``), so in this mode the secondary is lexicographic only over
   that relabelling, not over all plans of the same max load.
A layer's status is "optimal" when CP-SAT proved it or its max load meets the lower bound.

Time limit: one deadline for the whole call. Each layer gets (time left) / (layers left);
every stage (packing, descent, local search, CP-SAT) stops at its layer's deadline and the
best complete plan found so far is kept. The packing of all layers comes first and is
never cut by the clock (a few ms per layer, one array step per replica for all layers;
only a layer needing ``pack``'s rare freeing move is packed alone, and that one may be cut
to a round-robin plan); layers reached after the deadline keep their packing (method
"greedy": no search ran). A layer
whose search was stopped by the clock is reported with ``time_limit_reached``. What still
runs after the deadline is O(slots) per layer (replica counts, bound, round robin, about
3-10 us per slot, capped by ``problem.MAX_TOTAL_SLOTS``), plus one CP-SAT or numpy step
that was under way. Results are deterministic for a fixed seed whenever every layer ends
by proof, stall or the lower bound first, and with ``Settings.effort`` (a deterministic
budget per layer: local-search tries and CP-SAT deterministic seconds; the choice of the
exact model then depends on it, not on the time share) whenever the time limit, now only
a hard stop, does not cut in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from optimizer.place.bounds import min_max_replicas
from optimizer.place.exact import EXACT_MAX_LITERALS, EXACT_S_PER_LITERAL, exact_size, solve_exact
from optimizer.place.heuristic import ILS_STALL, TRIES_PER_EFFORT, descent, local_search
from optimizer.place.layer_state import LayerState
from optimizer.place.packing import pack_many
from optimizer.place.problem import REL_TOL, LayerPlacement, Placement, PlaceSpec, Settings
from optimizer.place.rank_nodes import nodes_by_bundles

log = logging.getLogger(__name__)

PACK_MANY_CELLS = 1 << 24  # (layer, expert, rank) flags of one ``pack_many`` call at most (16 MB)


def place(counts: np.ndarray, layer_ids: list[int], spec: PlaceSpec, settings: Settings,
          progress: Callable[[int], None] | None = None) -> Placement:
    """Placement of every layer of ``counts`` ([layers][experts] int tokens).

    ``settings.time_limit_s`` is one deadline for the whole call (see the module doc): each
    layer gets (time left) / (layers left) of its worker; with ``workers > 1`` and several
    layers, layers are split round-robin over that many processes (each CP-SAT
    single-threaded), otherwise CP-SAT uses ``workers`` threads. ``progress(k)`` is called
    as layers finish, ``k`` the number just finished (all layers add up to ``len(layer_ids)``).
    """
    start = time.monotonic()
    counts = np.asarray(counts, dtype=np.int64)
    num_layers, num_experts = counts.shape
    spec.check(num_experts, num_layers)
    deadline = start + settings.time_limit_s
    groups = max(1, min(settings.workers, num_layers))
    if groups == 1:
        results = _run_group(counts, layer_ids, list(range(num_layers)), spec, settings, deadline,
                             progress=progress)
    else:
        results = _run_parallel(counts, layer_ids, spec, settings, deadline, groups, progress)
    position = {lid: i for i, lid in enumerate(layer_ids)}
    results.sort(key=lambda lp: position[lp.layer])
    return Placement(spec, num_experts, results, time.monotonic() - start)


def _run_group(counts, layer_ids, rows: list[int], spec: PlaceSpec, settings: Settings,
               deadline: float, threads: int | None = None,
               progress: Callable[[int], None] | None = None) -> list[LayerPlacement]:
    """Every layer of ``rows`` packed first, all at once and whatever the deadline (the
    EPLB-quality plan every layer starts from: ``pack_many``, a few ms per layer), then
    improved in turn, each within (time left) / (layers left)."""
    start = time.monotonic()
    packed = _pack_rows(counts, rows, spec)
    pack_s = (time.monotonic() - start) / max(1, len(rows))
    states = []
    for row, first in zip(rows, packed):
        start = time.monotonic()
        st = LayerState(np.asarray(counts[row], dtype=np.int64), spec,
                        settings.seed + 7919 * layer_ids[row], deadline, settings.effort, first)
        states.append((st, pack_s + time.monotonic() - start))
    out = []
    for i, (row, (st, pack_s)) in enumerate(zip(rows, states)):
        share = max(0.0, deadline - time.monotonic()) / (len(rows) - i)
        out.append(_improve(st, layer_ids[row], share, threads or settings.workers, pack_s))
        states[i] = None  # free the layer's state
        if progress is not None:
            progress(1)
    return out


def _pack_rows(counts, rows: list[int], spec: PlaceSpec) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per row: (min-max replica counts, ``pack``'s plan), computed for all rows at once by
    ``pack_many``; None for a row that needs ``pack``'s freeing move (LayerState packs it)."""
    E, G = counts.shape[1], spec.num_ranks
    if not rows or E * G > PACK_MANY_CELLS:  # huge layers: ``pack`` alone, which the clock can cut
        return [None] * len(rows)
    S = spec.slots_per_rank(E)
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    chunk = max(1, PACK_MANY_CELLS // (E * G))  # [layers][E][G] flags per call at most PACK_MANY_CELLS
    for first in range(0, len(rows), chunk):
        n = np.asarray(counts[rows[first:first + chunk]], dtype=np.float64)
        count = np.array([min_max_replicas(row, E + spec.redundant, spec.max_replicas()) for row in n],
                         dtype=np.int64)
        plans, done = pack_many(n, count, spec, S)
        out += [(count[i], plans[i]) if done[i] else None for i in range(len(n))]
    return out


def _run_parallel(counts, layer_ids, spec, settings, deadline, groups, progress=None) -> list[LayerPlacement]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    rows = [list(range(g, counts.shape[0], groups)) for g in range(groups)]
    try:
        pool = ProcessPoolExecutor(max_workers=groups, mp_context=mp.get_context("fork"))
    except (OSError, ValueError) as exc:  # no fork or no semaphores here: one process
        log.warning("place: no worker processes (%s); solving layers one by one", exc)
        return _run_group(counts, layer_ids, list(range(counts.shape[0])), spec, settings, deadline,
                          progress=progress)
    # CLOCK_MONOTONIC is system-wide on Linux, so the deadline means the same in children.
    with pool:
        futures = [pool.submit(_run_group, counts, layer_ids, r, spec, settings, deadline, 1)
                   for r in rows]
        if progress is not None:  # a process's layers count when all of them are done
            from concurrent.futures import as_completed
            for done in as_completed(futures):
                progress(len(done.result()))
        return [lp for f in futures for lp in f.result()]



def solve_layer(counts: np.ndarray, layer: int, spec: PlaceSpec, time_limit_s: float,
                workers: int = 1, seed: int = 0, effort: float | None = None) -> LayerPlacement:
    """The placement of one layer (``counts``: [E] int tokens) within ``time_limit_s``
    (every search stops then; the best plan found so far is returned) and the
    deterministic budget ``effort`` (``Settings.effort``)."""
    start = time.monotonic()
    st = LayerState(np.asarray(counts, dtype=np.int64), spec, seed + 7919 * layer,
                    start + max(time_limit_s, 0.0), effort)
    elapsed = time.monotonic() - start
    return _improve(st, layer, max(time_limit_s - elapsed, 0.0), workers, elapsed)


def _improve(st: LayerState, layer: int, time_limit_s: float, workers: int,
             pack_s: float = 0.0) -> LayerPlacement:
    """Descent, then the exact model (small layers) or the local search (large ones), then
    ranks to nodes, all within ``time_limit_s``; ``pack_s`` is the packing time already spent."""
    spec = st.spec
    start = time.monotonic()
    deadline = start + max(time_limit_s, 0.0)
    greedy_max = st.max_load()
    descent(st, deadline)
    size = exact_size(st)  # the exact model only when small and the budget can build it
    affordable = st.effort if st.effort is not None else time_limit_s  # deterministic when set
    exact = size <= EXACT_MAX_LITERALS and affordable >= size * EXACT_S_PER_LITERAL
    method, cp_proven, cp_bound = ("exact" if exact else "search"), False, 0.0
    timed_out = st.packing_cut  # did the clock, not a proof, stall or bound, end the search?
    nodes = spec.num_nodes > 1 and spec.redundant > 0  # with single replicas, no choice
    if st.max_load() > st.lower * (1 + REL_TOL):
        if time.monotonic() >= deadline:
            method, timed_out = "greedy", True  # packing and descent only: no time for a search
        elif exact:
            if spec.redundant:  # a better hint first, then the proof
                local_search(st, start + 0.5 * (deadline - start), max_stall=ILS_STALL // 8,
                             max_tries=_tries(st, 0.5))
            cp_proven, cp_bound, cut = solve_exact(st, deadline, workers)  # phase 2 handles nodes
            timed_out |= cut
        else:
            reserve = 0.1 * (deadline - time.monotonic()) if nodes else 0.0  # for rank_nodes
            timed_out |= local_search(st, deadline - reserve, max_tries=_tries(st, 1.0))
    if nodes:
        nodes_by_bundles(st, deadline)
    max_load = st.max_load()
    lower = max(st.lower, cp_bound)
    proven = cp_proven or max_load <= lower * (1 + REL_TOL)
    if proven:
        lower = max_load  # CP-SAT proved optimality, or the bound is met up to float noise
    ranks = np.sort(st.R, axis=1).tolist()  # [G][S] expert ids, sorted per rank
    return LayerPlacement(layer=layer, ranks=ranks, max_load=max_load, mean_load=st.mean,
                          lower_bound=min(lower, max_load), proven=proven, method=method,
                          cross_node_tokens=st.cross_node_tokens() if spec.num_nodes > 1 else None,
                          wall_s=pack_s + time.monotonic() - start, greedy_max_load=greedy_max,
                          time_limit_reached=timed_out and not proven)


def _tries(st: LayerState, share: float) -> int | None:
    """Local-search tries allowed by ``share`` of the layer's deterministic effort."""
    return None if st.effort is None else max(1, round(share * st.effort * TRIES_PER_EFFORT))
