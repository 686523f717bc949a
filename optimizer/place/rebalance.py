"""The driver of ``moeopt place --current``: best balance from scratch, then per layer the
plan with the fewest moves from the current placement within the tolerance (``migrate``),
and the transfers that realize it.

Budget: the from-scratch placement gets ``SCRATCH_SHARE`` of the time limit, the migration
the rest, split evenly over the layers (each CP-SAT run also bounded by the deterministic
budget of :class:`Settings`, when set, so results repeat for a fixed seed).

Transfers: each move (expert e to rank g) is sent by a rank that holds e now, one on g's
node when there is one (intra-node link), else any (inter-node link); among those, the
one that has sent least so far (ties: lowest rank).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from optimizer.place.migrate import migrate_layer
from optimizer.place.problem import Placement, PlaceSpec, Settings
from optimizer.place.run import place

SCRATCH_SHARE = 0.4     # of the time limit for the from-scratch placement; the rest migrates


def rebalance(counts: np.ndarray, layer_ids: list[int], current: dict[int, np.ndarray],
              spec: PlaceSpec, settings: Settings, tolerance: float, objective: str = "moves",
              expert_bytes: float | None = None) -> Placement:
    """The placement of every layer with migration cost (see the module doc). ``current``:
    layer id -> [G][S] expert ids in service; ``expert_bytes``: one routed expert's weights
    (bytes), for the byte figures (None: moves only)."""
    start = time.monotonic()
    counts = np.asarray(counts, dtype=np.int64)
    scratch = place(counts, layer_ids, spec, replace(settings, time_limit_s=SCRATCH_SHARE * settings.time_limit_s))
    deadline = start + settings.time_limit_s
    G = spec.num_ranks
    node = np.arange(G) // (G // spec.num_nodes)
    sent, received = np.zeros(G, dtype=np.int64), np.zeros(G, dtype=np.int64)
    totals = {"moves": 0, "inter_node_moves": 0, "scratch_moves": 0, "slots": 0}
    given_up = 0.0
    layers = []
    for i, (row, lp) in enumerate(zip(counts, scratch.layers)):
        share = max(0.0, deadline - time.monotonic()) / (len(layer_ids) - i)
        mig = migrate_layer(row, current[lp.layer], np.array(lp.ranks, dtype=np.int64), spec, tolerance,
                            objective, time.monotonic() + share, settings.workers,
                            settings.seed + 7919 * lp.layer, settings.effort)
        s, r, _ = transfers(mig.ranks, current[lp.layer], node)
        sent += s
        received += r
        for key in ("moves", "inter_node_moves", "scratch_moves"):
            totals[key] += getattr(mig, key)
        totals["slots"] += mig.ranks.size
        given_up = max(given_up, mig.max_load / lp.max_load - 1.0 if lp.max_load > 0 else 0.0)
        layers.append(replace(
            lp, ranks=np.sort(mig.ranks, axis=1).tolist(), max_load=mig.max_load,
            lower_bound=min(lp.lower_bound, mig.max_load), proven=lp.proven and mig.max_load <= lp.max_load,
            migration={"moves": mig.moves, "inter_node_moves": mig.inter_node_moves,
                       "scratch_moves": mig.scratch_moves, "best_max_load": round(lp.max_load, 3),
                       "current_max_load": round(mig.current_max_load, 3),
                       "target_max_load": round(mig.target_max_load, 3),
                       "moves_proven_minimal": mig.proven, "replica_counts_fixed": mig.counts_fixed}))
    out = Placement(spec, scratch.num_experts, layers, time.monotonic() - start)
    summary = {"tolerance": tolerance, "objective": objective, "moves": totals["moves"],
               "inter_node_moves": totals["inter_node_moves"],
               "intra_node_moves": totals["moves"] - totals["inter_node_moves"],
               "scratch_moves": totals["scratch_moves"],
               "kept_fraction": round(1 - totals["moves"] / totals["slots"], 6) if totals["slots"] else 1.0,
               "balance_given_up": round(given_up, 6),
               "received_moves_per_rank": received.tolist(), "sent_moves_per_rank": sent.tolist()}
    if expert_bytes is not None:
        summary.update({"expert_bytes": expert_bytes,
                        "moved_bytes": totals["moves"] * expert_bytes,
                        "intra_node_bytes": (totals["moves"] - totals["inter_node_moves"]) * expert_bytes,
                        "inter_node_bytes": totals["inter_node_moves"] * expert_bytes,
                        "received_bytes_per_rank": [int(x) * expert_bytes for x in received],
                        "sent_bytes_per_rank": [int(x) * expert_bytes for x in sent],
                        "max_received_bytes_per_rank": int(received.max()) * expert_bytes,
                        "max_sent_bytes_per_rank": int(sent.max()) * expert_bytes})
    out.extra["migration"] = summary
    return out


def transfers(plan: np.ndarray, current: np.ndarray, node: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """([G] experts sent, [G] experts received, inter-node transfers) realizing ``plan``
    from ``current`` (the source rule of the module doc)."""
    G = len(plan)
    holders: dict[int, list[int]] = {}
    for g in range(G):
        for e in current[g]:
            holders.setdefault(int(e), []).append(g)
    held = {(int(e), g) for g in range(G) for e in current[g]}
    sent, received = np.zeros(G, dtype=np.int64), np.zeros(G, dtype=np.int64)
    inter = 0
    for g in range(G):
        for e in plan[g]:
            if (int(e), g) in held:
                continue
            near = [h for h in holders[int(e)] if node[h] == node[g]]
            pool = near or holders[int(e)]
            src = min(pool, key=lambda h: (sent[h], h))
            sent[src] += 1
            received[g] += 1
            inter += not near
    return sent, received, inter
