"""Parallel degrees and the rank-to-GPU layout they imply.

Megatron-Core's default rank order (``tp-cp-ep-dp-pp``, first varies fastest) with MoE
parallel folding: per pipeline stage the same ``tp*dp`` GPUs are viewed as attention
``TP x DP`` and as MoE ``ETP x EP x EDP``:

    rank = tp_rank  + tp  * (dp_rank + dp * stage)
         = etp_rank + etp * (ep_rank + ep * (edp_rank + edp * stage))

Node of a rank = rank // gpus_per_node. Link facts (how many EP peers share a node, whether
stage boundaries cross nodes) are read off a list of ``GpuSlot`` so that a hand-written plan
with another layout is judged by its own layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby


@dataclass(frozen=True, order=True)
class Degrees:
    """Parallel degrees; ``tp*dp == etp*ep*edp`` GPUs per stage, ``pp`` stages."""

    tp: int
    pp: int
    dp: int
    ep: int
    etp: int
    edp: int
    micro_batches: int

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def gpus_per_stage(self) -> int:
        return self.tp * self.dp


@dataclass(frozen=True)
class GpuSlot:
    """Where one GPU sits and which group ranks it holds."""

    rank: int
    node: int
    local_rank: int
    stage: int
    tp_rank: int
    dp_rank: int
    ep_rank: int
    etp_rank: int
    edp_rank: int


def megatron_layout(deg: Degrees, gpus_per_node: int) -> tuple[GpuSlot, ...]:
    """GpuSlot per rank for Megatron's default order with parallel folding."""
    slots = []
    per_stage = deg.gpus_per_stage
    for rank in range(deg.num_gpus):
        stage, in_stage = divmod(rank, per_stage)
        dp_rank, tp_rank = divmod(in_stage, deg.tp)
        rest, etp_rank = divmod(in_stage, deg.etp)
        edp_rank, ep_rank = divmod(rest, deg.ep)
        node, local = divmod(rank, gpus_per_node)
        slots.append(GpuSlot(rank, node, local, stage, tp_rank, dp_rank, ep_rank,
                             etp_rank, edp_rank))
    return tuple(slots)


def _groups(slots: tuple[GpuSlot, ...], key) -> list[list[GpuSlot]]:
    ordered = sorted(slots, key=key)
    return [list(g) for _, g in groupby(ordered, key=key)]


def ep_groups(slots: tuple[GpuSlot, ...]) -> list[list[GpuSlot]]:
    """GPUs that exchange tokens in one all-to-all: same stage, ETP rank and EDP rank."""
    return _groups(slots, lambda s: (s.stage, s.etp_rank, s.edp_rank))


def tp_groups(slots: tuple[GpuSlot, ...]) -> list[list[GpuSlot]]:
    """GPUs that share one attention TP group: same stage and DP rank."""
    return _groups(slots, lambda s: (s.stage, s.dp_rank))


def etp_groups(slots: tuple[GpuSlot, ...]) -> list[list[GpuSlot]]:
    """GPUs that hold slices of the same experts: same stage, EP rank and EDP rank."""
    return _groups(slots, lambda s: (s.stage, s.ep_rank, s.edp_rank))


def min_local_peers(groups: list[list[GpuSlot]]) -> tuple[int, int]:
    """(local, remote) peers of the worst-placed member over all groups: the member with
    the fewest group peers on its own node (itself excluded)."""
    worst = None
    for group in groups:
        for member in group:
            local = sum(1 for o in group if o.node == member.node) - 1
            remote = len(group) - 1 - local
            if worst is None or remote > worst[1]:
                worst = (local, remote)
    return worst if worst is not None else (0, 0)


def spans_nodes(groups: list[list[GpuSlot]]) -> bool:
    """True when some group has members on more than one node."""
    return any(len({s.node for s in g}) > 1 for g in groups)


def stage_boundary_inter_node(slots: tuple[GpuSlot, ...]) -> bool:
    """True when some GPU's counterpart in the next stage (same TP and DP rank) sits on
    another node, so pipeline sends use the inter-node link."""
    where = {(s.stage, s.tp_rank, s.dp_rank): s.node for s in slots}
    return any(where.get((st + 1, tp, dp), node) != node for (st, tp, dp), node in where.items())


def trivial_ranks(num_experts: int, ep: int) -> list[list[int]]:
    """Contiguous blocks of experts per rank (the runtimes' default placement)."""
    slots = num_experts // ep
    return [list(range(r * slots, (r + 1) * slots)) for r in range(ep)]
