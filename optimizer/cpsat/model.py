"""The CP-SAT deployment model: variables, constraint families, objectives.

Reading order: ``build_context`` gathers the data (candidate configurations with their
integer cost tables, expert loads, limits); ``DeploymentModel.__init__`` creates the
requirement literals, runs ``constraints.FAMILIES`` in order (``run_families``) and defines the objective

    objective_ns = average time a GPU loses over the batch to communication (TP all-reduce,
                   EP all-to-all and ETP collectives, pipeline sends) and to expert
                   imbalance (hot-rank expert time above the balanced time)

which is lexicographically followed by the batch makespan (``solve.py``).
"""

from __future__ import annotations

from dataclasses import replace

from ortools.sat.python import cp_model

import constraints
from constraints.pipeline import phase_of
from optimizer.costs.candidates import admissible_degrees
from optimizer.costs.config_bounds import config_bounds_many, greedy_plan, hot_load_lower_bound
from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.tables import LinkFacts, StageCosts, stage_costs
from optimizer.costs.timing import makespan_limit_ns
from optimizer.costs.units import LOAD_SCALE, gb_to_bytes_floor
from optimizer.cpsat.context import Context, FamilyOrderError, ModelData
from optimizer.cpsat.pruning import exact_hot_loads
from optimizer.errors import InputError
from optimizer.inputs.schema import Instance

REQUIREMENTS = ("memory", "ttft", "tpot", "throughput")


def candidate_costs(inst: Instance, num_gpus: int) -> list[StageCosts]:
    """Integer cost tables of every admissible configuration on Megatron's layout."""
    degs = admissible_degrees(inst, num_gpus)
    if not degs:
        raise InputError(no_tuple_message(inst, num_gpus))
    gpn = inst.hardware.gpus_per_node
    facts: dict[tuple[int, ...], LinkFacts] = {}  # the layout does not depend on micro-batches
    shared: dict = {}  # per-layer terms shared by configurations (tables.stage_costs)
    out = []
    for d in degs:
        key = (d.tp, d.pp, d.dp, d.ep, d.etp)
        if key not in facts:
            facts[key] = LinkFacts.of_megatron(d, gpn)
        out.append(stage_costs(inst, d, facts[key], shared))
    return out


def no_tuple_message(inst: Instance, num_gpus: int) -> str:
    """Which field leaves no admissible configuration on ``num_gpus`` GPUs."""
    wl, m = inst.workload, inst.model
    loose = inst.model_copy(update={"workload": wl.model_copy(update={"micro_batches": None}),
                                    "search": inst.search.model_copy(update={"max_micro_batches": 4096})})
    if admissible_degrees(loose, num_gpus):
        return (f"workload.micro_batches={wl.micro_batches} (search.max_micro_batches="
                f"{inst.search.max_micro_batches}): no allowed count splits a replica's sequences "
                f"evenly on {num_gpus} GPUs")
    where = "hardware.num_gpus" if num_gpus == inst.hardware.num_gpus else "GPU count (--gpus)"
    return (f"{where}={num_gpus}: no admissible (tp, pp, dp, ep) tuple: TP must divide the "
            f"{m.num_attention_heads} heads and fit a node of {inst.hardware.gpus_per_node}, "
            f"PP <= {m.num_layers} layers, DP <= {wl.batch_sequences} sequences, "
            f"tp*pp*dp = {num_gpus}")


def build_context(inst: Instance, num_gpus: int, cfgs: tuple[StageCosts, ...] | None = None) -> ModelData:
    """Data of one build: candidate tables (``cfgs`` when already computed), loads,
    makespan limits, memory cap."""
    cfgs = tuple(cfgs if cfgs is not None else candidate_costs(inst, num_gpus))
    return ModelData(inst=inst, num_gpus=num_gpus, cfgs=cfgs, loads=expert_loads(inst),
                     limits_ns=makespan_limit_ns(inst, num_gpus),
                     memory_cap_bytes=gb_to_bytes_floor(inst.memory_limit_gb))


def run_families(ctx: Context, families=None) -> None:
    """Run the constraint families in order (default ``constraints.FAMILIES``), storing
    what each provides; FamilyOrderError when one needs variables not yet provided."""
    for family in constraints.FAMILIES if families is None else families:
        ctx.running = family.__name__
        missing = [name for name in family.NEEDS if name not in ctx.provided]
        if missing:
            raise FamilyOrderError(f"constraint family {family.__name__!r} needs {missing}, which no "
                                   f"earlier family provides: put it after the families providing them")
        variables = family.build(ctx)
        if family.PROVIDES is not None:
            ctx.provide(family.PROVIDES, variables)
    ctx.running = "?"


class DeploymentModel:
    """CP-SAT model of one instance on ``data.num_gpus`` GPUs.

    ``explain=True`` leaves the requirement literals free and passes them as assumptions,
    so an infeasible solve names a sufficient set of conflicting requirements. ``relax``
    drops requirements. ``cutoff`` ("objective" or "makespan": what will be minimized)
    drops configurations whose lower bound on it exceeds a feasible greedy plan's value:
    they cannot hold an optimum.

    After construction: ``data`` (the configurations kept, with pruning's results),
    ``model``, ``ctx`` (the variables of every family), ``objective``, ``bounds`` (per kept
    configuration) and ``greedy`` (a feasible greedy plan or None).
    """

    def __init__(self, data: ModelData, explain: bool = False, relax: tuple[str, ...] = (),
                 cutoff: str | None = None, progress: Progress | None = None):
        model = cp_model.CpModel()
        requirement = {name: model.new_bool_var(f"require_{name}") for name in REQUIREMENTS}
        for name in REQUIREMENTS:
            if name in relax:
                model.add(requirement[name] == 0)
            elif not explain:
                model.add(requirement[name] == 1)
        if explain:
            model.add_assumptions([requirement[name] for name in REQUIREMENTS if name not in relax])
        self.model = model
        self.data, self.bounds, self.greedy = self._filter(data, explain, relax, cutoff, progress)
        self.ctx = Context(self.data, model, requirement)
        self.objective: cp_model.IntVar | None = None
        if not self.data.cfgs:  # every configuration is ruled out by a bound: nothing to model
            run_families(self.ctx, [constraints.degrees])
            return
        run_families(self.ctx)
        self._objective()
        self._bound_rows()
        self._hint()

    @staticmethod
    def _filter(data: ModelData, explain: bool, relax: tuple[str, ...], cutoff: str | None,
                progress: Progress | None = None):
        """(data, bounds, greedy): the candidates modelled in full, with their bounds, and
        the greedy plan. Candidates a requirement rules out by a lower bound are kept as
        ``blocked`` in explain mode and dropped otherwise; with ``cutoff``, also those that
        cannot beat a feasible greedy plan. Cheap hot-load bounds first, then proven
        per-layer optima for the EP degrees left."""
        limits = {name: v for name, v in data.limits_ns.items() if name not in relax}
        cap_bytes = data.memory_cap_bytes if "memory" not in relax else 1 << 62
        cheap = {ep: [hot_load_lower_bound(row, ep) for row in data.loads] for ep in data.values_of("ep")}
        kept, greedy, blocked = _survivors(data, data.cfgs, cheap, limits, cap_bytes, explain, cutoff, {})
        if progress is not None:
            progress.record(kept, greedy)
        hot_exact = exact_hot_loads(data.loads, sorted({config.deg.ep for config, _ in kept}))
        lower = {ep: [h.lower for h in rows] for ep, rows in hot_exact.items()}
        placements = {ep: [h.ranks for h in rows] for ep, rows in hot_exact.items()}
        kept, greedy, _ = _survivors(data, [config for config, _ in kept], lower, limits, cap_bytes, False,
                                     cutoff, placements)
        if progress is not None:
            progress.record(kept, greedy)
        data = replace(data, cfgs=tuple(config for config, _ in kept), blocked=tuple(blocked),
                       hot_exact=hot_exact)
        return data, [bound for _, bound in kept], greedy

    @property
    def makespan(self) -> cp_model.IntVar:
        return self.ctx.timing.makespan

    @property
    def ttft(self) -> cp_model.IntVar:
        return self.ctx.timing.ttft

    @property
    def requirement(self) -> dict[str, cp_model.IntVar]:
        return self.ctx.requirement

    def _bound_rows(self) -> None:
        """Redundant rows: objective and makespan >= the chosen configuration's lower
        bounds (linear in the one-hot choice; they make the LP relaxation tight)."""
        model, chosen = self.model, self.ctx.choice.config
        model.add(self.objective >= sum(b.objective_ns * v for b, v in zip(self.bounds, chosen)))
        model.add(self.makespan >= sum(b.makespan_ns * v for b, v in zip(self.bounds, chosen)))
        model.add(self.ttft >= sum(b.ttft_ns * v for b, v in zip(self.bounds, chosen)))

    def _hint(self) -> None:
        """Hint the greedy plan's configuration and layer split (placement hints are set
        by the placement module with the same greedy rule)."""
        greedy, model = self.greedy, self.model
        if greedy is None:
            return
        for k, var in enumerate(self.ctx.choice.config):
            model.add_hint(var, k == greedy.index)
        pp = self.data.cfgs[greedy.index].deg.pp
        if pp > 1:
            stage_of = [j for j, count in enumerate(greedy.counts) for _ in range(count)]
            for layer, row in enumerate(self.ctx.timing.in_stage[pp]):
                for j, var in enumerate(row):
                    if var is not None:
                        model.add_hint(var, stage_of[layer] == j)

    def _objective(self) -> None:
        """objective = time lost per GPU over the batch (communication, expert imbalance,
        pipeline idling): per phase p * lost >= p * T - m * U + m (p-1) t_p2p for the chosen
        configuration, T the prefill makespan or one decode step, U its useful work per
        pass (``evaluate.lost_ns``); prefill once plus every decode step."""
        data, model, timing = self.data, self.model, self.ctx.timing
        n_moe = len(data.moe_ids)
        phases = [(0, timing.ttft, 1)]
        if data.decoding:
            phases.append((1, timing.tpot, data.inst.workload.output_tokens))
        terms, top_total = [], 0
        full = {layer: LOAD_SCALE for layer in data.moe_ids}
        for phase, span, weight in phases:
            top = max((phase_of(config, phase).stage_ns(range(data.num_layers), full, True, True)
                       + phase_of(config, phase).p2p_ns) * (config.deg.micro_batches + config.deg.pp)
                      for config in data.cfgs)  # >= T + m (p-1) t_p2p / p >= lost
            lost = model.new_int_var(0, top, f"lost_ns[{phase}]")
            for k, config in enumerate(data.cfgs):
                costs, p, m = phase_of(config, phase), config.deg.pp, config.deg.micro_batches
                model.add(p * lost >= p * span - m * costs.useful_pass_ns(n_moe)
                          + m * (p - 1) * costs.p2p_ns).only_enforce_if(self.ctx.choice.config[k])
            terms.append(weight * lost)
            top_total += weight * top
        self.objective = model.new_int_var(0, top_total, "objective_ns")
        model.add(self.objective == sum(terms))

    @property
    def empty(self) -> bool:
        """True when no configuration survived the bounds (the instance is infeasible)."""
        return not self.data.cfgs

    def chosen(self, solver: cp_model.CpSolver) -> StageCosts:
        """The configuration the solver selected."""
        return next(config for config, var in zip(self.data.cfgs, self.ctx.choice.config)
                    if solver.boolean_value(var))


class Progress:
    """What a build has found so far, for a build abandoned at the deadline: the latest
    greedy plan (``costs.config_bounds.GreedyPlan``, indexing ``cfgs``), the configurations
    still in play and their lower bounds."""

    def __init__(self):
        self.cfgs: list[StageCosts] = []
        self.bounds: list = []
        self.greedy = None

    def record(self, kept, greedy) -> None:
        """Keep the (configuration, bounds) pairs and greedy plan of a pruning round (a
        round without a greedy plan keeps the earlier one)."""
        if greedy is None:
            return
        self.cfgs = [config for config, _ in kept]
        self.bounds = [bound for _, bound in kept]
        self.greedy = greedy


def _survivors(data: ModelData, cfgs, hot_lb, limits, cap_bytes, explain, cutoff, placements):
    """(kept, greedy, blocked): the (configuration, bounds) pairs that may hold an optimum,
    the greedy plan over them, and (explain mode) the configurations a requirement rules
    out by a bound, with those requirements."""
    kept, blocked = [], []
    for config, bound in zip(cfgs, config_bounds_many(cfgs, hot_lb, data.moe_ids, cap_bytes)):
        reasons = tuple(name for name in REQUIREMENTS if (name == "memory" and not bound.memory_fits)
                        or (name in limits and bound.timing_ns(name) > limits[name]))
        if not reasons:
            kept.append((config, bound))
        elif explain:
            blocked.append((config.deg, reasons))
    if not kept:
        return [], None, blocked
    goal = cutoff or "objective"
    greedy = greedy_plan([config for config, _ in kept], data.loads, data.moe_ids, limits, cap_bytes,
                         goal, placements, [getattr(bound, f"{goal}_ns") for _, bound in kept])
    if cutoff and greedy is not None:
        chosen = kept[greedy.index][0]
        best = getattr(greedy, f"{cutoff}_ns")
        kept = [(config, bound) for config, bound in kept if getattr(bound, f"{cutoff}_ns") <= best]
        greedy = replace(greedy, index=[config for config, _ in kept].index(chosen))
    return kept, greedy, blocked
