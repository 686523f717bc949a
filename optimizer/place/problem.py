"""The placement problem: the cluster side (:class:`PlaceSpec`), solver settings, and the
per-layer and whole-run results with their JSON form (``moeopt place --format json``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from optimizer.errors import InputError

REL_TOL = 1e-12              # float comparisons of loads
MAX_SLOTS = 1 << 18          # expert slots per layer (experts + redundant): 65536 ranks x 4
MAX_TOTAL_SLOTS = 1 << 21    # expert slots over all layers: bounds the O(slots) work that every
                             # layer gets (replica counts, packing or round robin), deadline or not


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

    def check(self, num_experts: int, num_layers: int = 1) -> None:
        """One-line InputError for an impossible combination of experts, ranks and nodes,
        or one beyond the caps ``MAX_SLOTS`` and ``MAX_TOTAL_SLOTS``."""
        g, r, k = self.num_ranks, self.redundant, self.num_nodes
        if g < 1 or r < 0 or k < 1:
            raise InputError(f"--ep={g}, --redundant={r}, --nodes={k}: need ep >= 1, redundant >= 0, nodes >= 1")
        slots = num_experts + r
        if slots > MAX_SLOTS:
            raise InputError(f"--redundant={r}: experts + redundant = {num_experts} + {r} = {slots} slots "
                             f"per layer; at most {MAX_SLOTS}")
        if num_layers * slots > MAX_TOTAL_SLOTS:
            who = "loads" if num_layers * num_experts > MAX_TOTAL_SLOTS else f"--redundant={r}"
            raise InputError(f"{who}: {num_layers} layers x ({num_experts} experts + {r} redundant) = "
                             f"{num_layers * slots} slots; at most {MAX_TOTAL_SLOTS}")
        if g > slots:
            raise InputError(f"--ep={g}: more ranks than expert slots (experts + redundant = {slots}); "
                             f"at most {slots} ranks, each holding at least one slot")
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
    """Solver settings: total time budget in seconds (a hard stop), CPU workers, random
    seed, and ``effort``: a deterministic budget per layer (None: the clock alone). With
    ``effort`` the local search stops after ``effort * TRIES_PER_EFFORT`` tries and CP-SAT
    after ``effort`` deterministic seconds, so a fixed seed with one worker repeats the same
    plan whenever the time limit does not cut in first."""

    time_limit_s: float = 30.0
    workers: int = 1
    seed: int = 0
    effort: float | None = None


@dataclass
class LayerPlacement:
    """One layer's plan. Loads are routed token copies (tokens x top_k share)."""

    layer: int
    ranks: list[list[int]]          # [G][S] expert ids per rank, sorted
    max_load: float
    mean_load: float
    lower_bound: float
    proven: bool                    # max_load is optimal (CP-SAT proof or bound met)
    method: str                     # "exact" (full CP-SAT model) | "search" (local search) |
                                    # "greedy" (the time limit left room for no search)
    cross_node_tokens: float | None = None
    wall_s: float = 0.0
    greedy_max_load: float = 0.0    # the initial packing, for the log
    time_limit_reached: bool = False  # the clock, not a proof, stall or bound, ended the search
    migration: dict | None = None   # with --current: moves and loads of the rebalancing

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
        """The ``moeopt place --format json`` document (docs/interface.md, "Placement output")."""
        spec = self.spec
        layers = []
        for lp in self.layers:
            doc = {"layer": lp.layer, "ranks": lp.ranks, "max_load": _r(lp.max_load),
                   "mean_load": _r(lp.mean_load), "lower_bound": _r(lp.lower_bound),
                   "balancedness": round(lp.balancedness, 6), "gap": round(lp.gap, 6),
                   "status": "optimal" if lp.proven else "feasible", "method": lp.method}
            if lp.cross_node_tokens is not None:
                doc["cross_node_tokens"] = _r(lp.cross_node_tokens)
            if lp.time_limit_reached:
                doc["time_limit_reached"] = True
            if lp.migration is not None:
                doc["migration"] = lp.migration
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
        if any(lp.time_limit_reached for lp in self.layers):
            out["time_limit_reached"] = True
        out.update(self.extra)
        return out


def _r(x: float) -> float:
    return round(float(x), 3)

