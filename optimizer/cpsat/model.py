"""The CP-SAT deployment model: variables, constraint families, objectives.

Reading order: ``build_context`` gathers the data (candidate configurations with their
integer cost tables, expert loads, limits); ``DeploymentModel.__init__`` creates the
requirement literals, runs ``constraints.MODULES`` in order and defines the objective

    objective_ns = average time a GPU loses over the batch to communication (TP all-reduce,
                   EP all-to-all and ETP collectives, pipeline sends) and to expert
                   imbalance (hot-rank expert time above the balanced time)

which is lexicographically followed by the batch makespan (``solve.py``).
"""

from __future__ import annotations

from ortools.sat.python import cp_model

import constraints
from dataclasses import replace

from optimizer.cpsat.pruning import exact_hot_loads
from optimizer.costs.config_bounds import config_bounds, greedy_plan, hot_load_lower_bound
from optimizer.costs.candidates import admissible_degrees
from optimizer.cpsat.context import Context
from optimizer.errors import InputError
from optimizer.costs.timing import makespan_limit_ns
from optimizer.costs.layout import megatron_layout
from optimizer.costs.expert_loads import expert_loads
from optimizer.inputs.schema import Instance
from optimizer.costs.tables import LinkFacts, StageCosts, stage_costs
from constraints.pipeline import phase_of
from optimizer.costs.units import LOAD_SCALE, gb_to_bytes_floor

REQUIREMENTS = ("memory", "ttft", "tpot", "throughput")


def candidate_costs(inst: Instance, num_gpus: int) -> list[StageCosts]:
    """Integer cost tables of every admissible configuration on Megatron's layout."""
    degs = admissible_degrees(inst, num_gpus)
    if not degs:
        raise InputError(no_tuple_message(inst, num_gpus))
    gpn = inst.hardware.gpus_per_node
    facts: dict[tuple[int, ...], LinkFacts] = {}  # the layout does not depend on micro-batches
    out = []
    for d in degs:
        key = (d.tp, d.pp, d.dp, d.ep, d.etp)
        if key not in facts:
            facts[key] = LinkFacts.of(megatron_layout(d, gpn))
        out.append(stage_costs(inst, d, facts[key]))
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


def build_context(inst: Instance, num_gpus: int) -> Context:
    """Data of one build: candidate tables, loads, makespan limits, memory cap."""
    return Context(inst=inst, num_gpus=num_gpus, cfgs=candidate_costs(inst, num_gpus),
                   loads=expert_loads(inst), limits_ns=makespan_limit_ns(inst, num_gpus),
                   memory_cap_bytes=gb_to_bytes_floor(inst.memory_limit_gb))


class DeploymentModel:
    """CP-SAT model of one instance on ``num_gpus`` GPUs.

    ``explain=True`` leaves the requirement literals free and passes them as assumptions,
    so an infeasible solve names a sufficient set of conflicting requirements. ``relax``
    drops requirements. ``cutoff`` ("objective" or "makespan": what will be minimized)
    drops configurations whose lower bound on it exceeds a feasible greedy plan's value:
    they cannot hold an optimum.
    """

    def __init__(self, ctx: Context, explain: bool = False, relax: tuple[str, ...] = (),
                 cutoff: str | None = None):
        self.ctx = ctx
        model = ctx.model
        ctx.req = {r: model.new_bool_var(f"require_{r}") for r in REQUIREMENTS}
        for name in REQUIREMENTS:
            if name in relax:
                model.add(ctx.req[name] == 0)
            elif not explain:
                model.add(ctx.req[name] == 1)
        if explain:
            model.add_assumptions([ctx.req[r] for r in REQUIREMENTS if r not in relax])
        self.greedy = self._filter(explain, relax, cutoff)
        if not ctx.cfgs:  # every configuration is ruled out by a bound: nothing to model
            constraints.degrees.build(ctx)
            return
        for module in constraints.MODULES:
            module.build(ctx)
        self._objective()
        self._bound_rows()
        self._hint()

    def _filter(self, explain: bool, relax: tuple[str, ...], cutoff: str | None):
        """Split candidates into those modelled in full and those a requirement rules out
        by a lower bound (kept as blocked literals in explain mode, dropped otherwise);
        with ``cutoff``, also drop those that cannot beat a feasible greedy plan. Cheap
        hot-load bounds first, then proven per-layer optima for the EP degrees left."""
        ctx = self.ctx
        limits = {r: v for r, v in ctx.limits_ns.items() if r not in relax}
        cap = ctx.memory_cap_bytes if "memory" not in relax else 1 << 62
        cheap = {ep: [hot_load_lower_bound(row, ep) for row in ctx.loads] for ep in ctx.values_of("ep")}
        kept, greedy = self._survivors(ctx.cfgs, cheap, limits, cap, explain, cutoff, {})
        ctx.hot_exact = exact_hot_loads(ctx.loads, sorted({c.deg.ep for c, _ in kept}))
        lower = {ep: [h.lower for h in rows] for ep, rows in ctx.hot_exact.items()}
        placements = {ep: [h.ranks for h in rows] for ep, rows in ctx.hot_exact.items()}
        kept, greedy = self._survivors([c for c, _ in kept], lower, limits, cap, False,
                                       cutoff, placements)
        ctx.cfgs, self.bounds = [c for c, _ in kept], [b for _, b in kept]
        return greedy

    def _survivors(self, cfgs, hot_lb, limits, cap, explain, cutoff, placements):
        """(configuration, bounds) pairs that may hold an optimum, and the greedy plan."""
        ctx = self.ctx
        kept = []
        for c in cfgs:
            b = config_bounds(c, hot_lb[c.deg.ep], ctx.moe_ids, cap)
            reasons = tuple(r for r in REQUIREMENTS if (r == "memory" and not b.memory_fits)
                            or (r in limits and b.timing_ns(r) > limits[r]))
            if not reasons:
                kept.append((c, b))
            elif explain:
                ctx.blocked.append((c.deg, reasons))
        if not kept:
            return [], None
        greedy = greedy_plan([c for c, _ in kept], ctx.loads, ctx.moe_ids, limits, cap,
                             cutoff or "objective", placements)
        if cutoff and greedy is not None:
            chosen = kept[greedy.index][0]
            best = getattr(greedy, f"{cutoff}_ns")
            kept = [(c, b) for c, b in kept if getattr(b, f"{cutoff}_ns") <= best]
            greedy = replace(greedy, index=[c for c, _ in kept].index(chosen))
        return kept, greedy

    def _bound_rows(self) -> None:
        """Redundant rows: objective and makespan >= the chosen configuration's lower
        bounds (linear in the one-hot choice; they make the LP relaxation tight)."""
        ctx = self.ctx
        ctx.model.add(ctx.objective >= sum(b.objective_ns * v for b, v in zip(self.bounds, ctx.cfg)))
        ctx.model.add(ctx.makespan >= sum(b.makespan_ns * v for b, v in zip(self.bounds, ctx.cfg)))
        ctx.model.add(ctx.ttft >= sum(b.ttft_ns * v for b, v in zip(self.bounds, ctx.cfg)))

    def _hint(self) -> None:
        """Hint the greedy plan's configuration and layer split (placement hints are set
        by the placement module with the same greedy rule)."""
        g, ctx = self.greedy, self.ctx
        if g is None:
            return
        for k, v in enumerate(ctx.cfg):
            ctx.model.add_hint(v, k == g.index)
        p = ctx.cfgs[g.index].deg.pp
        if p > 1:
            stage_of = [j for j, n in enumerate(g.counts) for _ in range(n)]
            for l, row in enumerate(ctx.in_stage[p]):
                for j, v in enumerate(row):
                    if v is not None:
                        ctx.model.add_hint(v, stage_of[l] == j)

    def _objective(self) -> None:
        """objective = time lost per GPU over the batch (communication, expert imbalance,
        pipeline idling): per phase p * lost >= p * T - m * U + m (p-1) t_p2p for the chosen
        configuration, T the prefill makespan or one decode step, U its useful work per
        pass (``evaluate.lost_ns``); prefill once plus every decode step."""
        ctx, model = self.ctx, self.ctx.model
        n_moe = len(ctx.moe_ids)
        phases = [(0, ctx.ttft, 1)]
        if ctx.decoding:
            phases.append((1, ctx.tpot, ctx.inst.workload.output_tokens))
        terms, top_total = [], 0
        for phase, span, weight in phases:
            full = {l: LOAD_SCALE for l in ctx.moe_ids}
            top = max((phase_of(c, phase).stage_ns(range(ctx.num_layers), full, True, True)
                       + phase_of(c, phase).p2p_ns) * (c.deg.micro_batches + c.deg.pp)
                      for c in ctx.cfgs)  # >= T + m (p-1) t_p2p / p >= lost
            lost = model.new_int_var(0, top, f"lost_ns[{phase}]")
            for k, c in enumerate(ctx.cfgs):
                ph, p, m = phase_of(c, phase), c.deg.pp, c.deg.micro_batches
                model.add(p * lost >= p * span - m * ph.useful_pass_ns(n_moe)
                          + m * (p - 1) * ph.p2p_ns).only_enforce_if(ctx.cfg[k])
            terms.append(weight * lost)
            top_total += weight * top
        ctx.objective = model.new_int_var(0, top_total, "objective_ns")
        model.add(ctx.objective == sum(terms))

    @property
    def empty(self) -> bool:
        """True when no configuration survived the bounds (the instance is infeasible)."""
        return not self.ctx.cfgs

    def chosen(self, solver: cp_model.CpSolver) -> StageCosts:
        """The configuration the solver selected."""
        return next(c for c, v in zip(self.ctx.cfgs, self.ctx.cfg) if solver.boolean_value(v))
