"""Expert placement for measured loads (``moeopt place``): experts and their replicas onto
EP ranks, one MoE layer at a time, minimizing the hottest rank's load. Imports
``optimizer.errors`` and ortools only, so it can serve a runtime's rebalancer on its own.

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

Modules, one job each
- ``problem``: :class:`PlaceSpec`, :class:`Settings`, the result types and their JSON.
- ``bounds``: the valid lower bound on a layer's max load (and the min-max replica counts).
- ``layer_state``: one layer's search state (replica counts, plan) and its evaluation.
- ``packing``: the initial plan (heaviest replica onto the least-loaded rank).
- ``heuristic``: the pairwise descent and the iterated local search.
- ``exact``: the CP-SAT model of a small layer (min-max, then cross-node tokens).
- ``rank_nodes``: whole ranks to nodes by CP-SAT for the secondary objective of large layers.
- ``run``: :func:`place` (all layers, one shared deadline) and :func:`solve_layer`.
"""

from optimizer.place.bounds import lower_bound, min_max_replicas
from optimizer.place.problem import LayerPlacement, Placement, PlaceSpec, Settings
from optimizer.place.run import place, solve_layer

__all__ = ["LayerPlacement", "PlaceSpec", "Placement", "Settings", "lower_bound", "min_max_replicas",
           "place", "solve_layer"]
