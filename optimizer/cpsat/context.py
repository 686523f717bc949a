"""The shared state of one CP-SAT build: data tables, the model and its variables.

Constraint modules (``constraints/``) read the data and add variables and constraints here;
``model.py`` creates the context, runs the modules in order and sets the objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from optimizer.inputs.schema import Instance
from optimizer.costs.tables import StageCosts

IntOrVar = int | cp_model.IntVar


@dataclass
class Context:
    """Data (instance, candidate tables, loads, limits) and the variables built on them."""

    inst: Instance
    num_gpus: int
    cfgs: list[StageCosts]
    loads: tuple[tuple[int, ...], ...]  # [MoE layer][expert], parts of LOAD_SCALE
    limits_ns: dict[str, int]  # makespan limits per timing requirement
    memory_cap_bytes: int
    model: cp_model.CpModel = field(default_factory=cp_model.CpModel)
    # configurations a requirement rules out by a lower bound (explain mode only)
    blocked: list[tuple[object, tuple[str, ...]]] = field(default_factory=list)
    cfg: list[cp_model.IntVar] = field(default_factory=list)  # one-hot over cfgs
    req: dict[str, cp_model.IntVar] = field(default_factory=dict)  # requirement literals
    # placement, per EP degree e: x[e][layer, expert, rank], hot[e][layer]
    assign: dict[int, dict[tuple[int, int, int], cp_model.IntVar]] = field(default_factory=dict)
    hot: dict[int, list[IntOrVar]] = field(default_factory=dict)
    hot_exact: dict[int, list] = field(default_factory=dict)  # per EP: bounding.HotLoad per MoE layer
    fixed: dict[int, dict[int, list[list[int]]]] = field(default_factory=dict)  # ep -> i -> ranks
    # pipeline, per PP degree p: in_stage[p][layer][stage] (None when impossible)
    in_stage: dict[int, list[list[cp_model.IntVar | None]]] = field(default_factory=dict)
    # per phase (0 prefill, 1 decode step): MoE layer times, stage times per (phase, p)
    moe_time: dict[int, list[cp_model.IntVar]] = field(default_factory=dict)
    stage_time: dict[tuple[int, int], list[cp_model.IntVar]] = field(default_factory=dict)
    slowest: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    ttft: cp_model.IntVar | None = None
    tpot: cp_model.IntVar | None = None
    makespan: cp_model.IntVar | None = None
    objective: cp_model.IntVar | None = None

    @property
    def num_layers(self) -> int:
        return self.inst.model.num_layers

    @property
    def moe_ids(self) -> list[int]:
        """Indices of the MoE layers; loads, hot loads and MoE times follow this order."""
        return self.inst.model.moe_layer_ids

    @property
    def decoding(self) -> bool:
        return self.inst.workload.output_tokens > 0

    def values_of(self, attr: str) -> list[int]:
        """Distinct values of one degree among the candidate configurations."""
        return sorted({getattr(c.deg, attr) for c in self.cfgs})

    def cfgs_with(self, attr: str, value: int) -> list[int]:
        """Indices of the candidate configurations whose degree ``attr`` equals ``value``."""
        return [k for k, c in enumerate(self.cfgs) if getattr(c.deg, attr) == value]

    def enforce(self, k: int, *requirements: str) -> list[cp_model.IntVar]:
        """Literals under which a constraint of configuration k (and requirements) holds."""
        return [self.cfg[k]] + [self.req[r] for r in requirements]
