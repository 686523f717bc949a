"""One CP-SAT build: its immutable data, the model, and the variables each family provides.

- ``ModelData`` (frozen): the instance, the candidate configurations with their integer cost
  tables, the expert loads, the limits, and what pruning found (blocked configurations,
  per-layer hot loads). Built by ``model.build_context`` and filtered by ``DeploymentModel``.
- ``Context``: the data, the ``CpModel``, the requirement literals, and the variables the
  constraint families (``constraints/``) have provided so far, by name.

A family declares ``NEEDS`` (names of families whose variables it reads) and ``PROVIDES`` (the
name of the variables it returns, or None). ``DeploymentModel`` runs the families in order and
stores what each returns with ``Context.provide``; reading variables no earlier family
provided raises FamilyOrderError naming both families (``Context.need`` and the typed
accessors ``choice``, ``placement``, ``timing``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ortools.sat.python import cp_model

from optimizer.costs.tables import StageCosts
from optimizer.inputs.schema import Instance

IntOrVar = int | cp_model.IntVar

# Variable names the standard families provide (``constraints.FAMILIES``).
DEGREES, PLACEMENT, PIPELINE = "degrees", "placement", "pipeline"


class FamilyOrderError(RuntimeError):
    """A constraint family read variables that no earlier family provided (a bug in the
    order of ``constraints.FAMILIES`` or in a family's ``NEEDS``)."""


@dataclass(frozen=True)
class ModelData:
    """Immutable data of one build (integers only: ns, bytes, parts of LOAD_SCALE)."""

    inst: Instance
    num_gpus: int
    cfgs: tuple[StageCosts, ...]  # candidate configurations, in the order of the one-hot
    loads: tuple[tuple[int, ...], ...]  # [MoE layer][expert], parts of LOAD_SCALE
    limits_ns: Mapping[str, int]  # makespan limits per timing requirement
    memory_cap_bytes: int
    # configurations a requirement rules out by a lower bound (explain mode only):
    # (degrees, names of the requirements that rule it out)
    blocked: tuple[tuple[object, tuple[str, ...]], ...] = ()
    # per EP degree: pruning.HotLoad per MoE layer (proven bound and best placement)
    hot_exact: Mapping[int, list] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.inst.model.num_layers

    @property
    def moe_ids(self) -> list[int]:
        """Indices of the MoE layers; loads, hot loads and MoE times follow this order."""
        return self.inst.model.moe_layer_ids

    @property
    def decoding(self) -> bool:
        """True when the workload generates tokens (there is a decode phase)."""
        return self.inst.workload.output_tokens > 0

    def values_of(self, attr: str) -> list[int]:
        """Distinct values of one degree (``"pp"``, ``"ep"``...) among the candidates."""
        return sorted({getattr(config.deg, attr) for config in self.cfgs})

    def cfgs_with(self, attr: str, value: int) -> list[int]:
        """Indices of the candidate configurations whose degree ``attr`` equals ``value``."""
        return [k for k, config in enumerate(self.cfgs) if getattr(config.deg, attr) == value]


@dataclass(frozen=True)
class Choice:
    """Provided by ``degrees``: the one-hot choice of configuration."""

    config: list[cp_model.IntVar]  # [k]: configuration data.cfgs[k] is chosen


@dataclass(frozen=True)
class PlacementVars:
    """Provided by ``placement``, per EP degree ep of the candidates."""

    # assign[ep][i, expert, rank]: expert on rank in the i-th MoE layer (modelled layers only)
    assign: dict[int, dict[tuple[int, int, int], cp_model.IntVar]]
    # hot[ep][i] >= every rank's routed load in the i-th MoE layer (a constant when known)
    hot: dict[int, list[IntOrVar]]
    # fixed[ep][i]: the precomputed placement (ranks -> experts) of a layer not modelled
    fixed: dict[int, dict[int, list[list[int]]]]


@dataclass(frozen=True)
class Timing:
    """Provided by ``pipeline``: stage assignment, per-phase times and batch timing (ns)."""

    in_stage: dict[int, list[list[cp_model.IntVar | None]]]  # [pp][layer][stage]; None: impossible
    moe_time: dict[int, list[cp_model.IntVar]]  # [phase][i]: i-th MoE layer (0 prefill, 1 decode)
    stage_time: dict[tuple[int, int], list[cp_model.IntVar]]  # [phase, pp][stage]
    slowest: dict[tuple[int, int], cp_model.IntVar]  # [phase, pp]: slowest stage
    ttft: cp_model.IntVar  # prefill makespan of the batch
    tpot: cp_model.IntVar | None  # one decode step (None without decode)
    makespan: cp_model.IntVar  # ttft + output_tokens * tpot


@dataclass
class Context:
    """The data, the model, the requirement literals and the variables provided so far."""

    data: ModelData
    model: cp_model.CpModel
    requirement: dict[str, cp_model.IntVar]  # literal "this requirement is enforced"
    provided: dict[str, Any] = field(default_factory=dict)
    running: str = "?"  # the family being built (for error messages)

    def provide(self, name: str, variables: Any) -> None:
        """Record the variables a family built under ``name`` (once)."""
        if name in self.provided:
            raise FamilyOrderError(f"two constraint families provide {name!r}")
        self.provided[name] = variables

    def need(self, name: str) -> Any:
        """The variables provided under ``name``; FamilyOrderError when none are yet."""
        if name not in self.provided:
            raise FamilyOrderError(
                f"constraint family {self.running!r} needs the {name!r} variables, which no earlier "
                f"family provided (provided so far: {sorted(self.provided) or 'none'})")
        return self.provided[name]

    @property
    def choice(self) -> Choice:
        return self.need(DEGREES)

    @property
    def placement(self) -> PlacementVars:
        return self.need(PLACEMENT)

    @property
    def timing(self) -> Timing:
        return self.need(PIPELINE)

    def enforce(self, k: int, *requirements: str) -> list[cp_model.IntVar]:
        """Literals under which a constraint of configuration k (and requirements) holds."""
        return [self.choice.config[k]] + [self.requirement[name] for name in requirements]
