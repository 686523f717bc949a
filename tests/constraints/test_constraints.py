"""Each CP-SAT constraint family on tiny models built directly (no instance file, no
pruning): hand-made integer cost tables, the families run in order, one solve, and the
solver's status and values checked against figures computed by hand in the comments.

Every family gets at least one feasible model (status and values) and one infeasible one
(the same model with one limit a unit too tight).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ortools.sat.python import cp_model

from constraints import degrees, latency, memory, pipeline, placement, throughput
from constraints.placement import add_layer_placement
from optimizer.costs.layout import Degrees
from optimizer.costs.tables import MemoryParts, PhaseCosts, StageCosts
from optimizer.costs.units import LOAD_SCALE
from optimizer.cpsat.context import Context, FamilyOrderError, ModelData
from optimizer.cpsat.model import REQUIREMENTS, run_families
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance

REPO = Path(__file__).resolve().parents[2]
BASE = load_model(REPO / "instances" / "10b_moe.json", Instance, "instance")
Q = LOAD_SCALE
TIMING = [degrees, placement, pipeline]  # what every timing family needs before it


def instance(num_layers: int = 3, output_tokens: int = 0) -> Instance:
    """The seed instance cut to ``num_layers`` layers (all MoE) and ``output_tokens``; the
    families read only the layer count, the MoE layer ids and the decode steps."""
    model = BASE.model.model_copy(update={"num_layers": num_layers, "moe_layers": None})
    workload = BASE.workload.model_copy(update={"output_tokens": output_tokens})
    return BASE.model_copy(update={"model": model, "workload": workload})


def phase(dense_ns=(10, 20, 30), embed_ns=1, head_ns=2, p2p_ns=5) -> PhaseCosts:
    """A phase whose MoE part costs nothing (every MoE coefficient 0): stage times are the
    dense times plus embedding (first stage) and LM head (last stage)."""
    return PhaseCosts(layer_dense_ns=tuple(dense_ns), tp_comm_ns=(0,) * len(dense_ns), moe_compute_full_ns=0,
                      moe_weights_ns=0, moe_act_full_ns=0, moe_comm_full_ns=0, moe_latency_ns=0,
                      embed_ns=embed_ns, head_ns=head_ns, p2p_ns=p2p_ns, ep=1)


def memory_parts(layer_bytes=(100, 100, 100)) -> MemoryParts:
    return MemoryParts(activations=10, buffers=0, layer_weights=tuple(layer_bytes),
                       layer_kv=(0,) * len(layer_bytes), embedding=50, head=50)


def config(pp: int = 1, micro_batches: int = 1, prefill: PhaseCosts | None = None,
           decode: PhaseCosts | None = None, ep: int = 1) -> StageCosts:
    deg = Degrees(tp=1, pp=pp, dp=1, ep=ep, etp=1, edp=1, micro_batches=micro_batches)
    return StageCosts(deg=deg, seqs_per_replica=1, seqs_per_micro_batch=1, decode_steps=0,
                      prefill=prefill or phase(), decode=decode, memory=memory_parts())


def context(cfgs, inst: Instance | None = None, limits_ns=None, cap_bytes: int = 10**9,
            blocked=(), loads=None, enforced=REQUIREMENTS) -> Context:
    """A fresh model with the requirement literals; those in ``enforced`` fixed to 1."""
    inst = inst or instance()
    loads = loads or tuple((Q // 2, Q // 2) for _ in range(inst.model.num_layers))
    data = ModelData(inst=inst, num_gpus=1, cfgs=tuple(cfgs), loads=loads, limits_ns=limits_ns or {},
                     memory_cap_bytes=cap_bytes, blocked=tuple(blocked))
    model = cp_model.CpModel()
    requirement = {name: model.new_bool_var(f"require_{name}") for name in REQUIREMENTS}
    for name in enforced:
        model.add(requirement[name] == 1)
    return Context(data, model, requirement)


def solve(ctx: Context, minimize=None) -> tuple[int, cp_model.CpSolver]:
    if minimize is not None:
        ctx.model.minimize(minimize)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 30
    return solver.solve(ctx.model), solver


# ---------------------------------------------------------------- degrees
def test_degrees_chooses_exactly_one_configuration():
    ctx = context([config(pp=1), config(pp=2)])
    run_families(ctx, [degrees])
    status, solver = solve(ctx)
    assert status == cp_model.OPTIMAL
    assert sum(solver.value(var) for var in ctx.choice.config) == 1


def test_degrees_blocked_configuration_needs_its_requirement_off():
    # No modelled configuration; one blocked by memory. Exactly one of {blocked} must be
    # chosen, and choosing it requires require_memory = 0.
    blocked = [(Degrees(1, 1, 1, 1, 1, 1, 1), ("memory",))]
    on = context([], blocked=blocked)
    run_families(on, [degrees])
    assert solve(on)[0] == cp_model.INFEASIBLE  # memory enforced: nothing can be chosen
    off = context([], blocked=blocked, enforced=())
    run_families(off, [degrees])
    status, solver = solve(off)
    assert status == cp_model.OPTIMAL
    assert solver.value(off.requirement["memory"]) == 0


# ---------------------------------------------------------------- placement
# Six experts, loads in thousandths of Q, on 3 ranks of 2 experts: 300 must pair with 40
# (300+60 = 360 already exceeds 350), then {250, 60} = 310 and {200, 150} = 350; the other
# pairings of 250 put it with 150 or 200 (>= 400). Optimum 350; the cheap bound is
# max(ceil(1000/3), 300 + 40) = 340 (the solver has to prove the remaining 10).
LOADS6 = tuple(x * Q // 1000 for x in (300, 250, 200, 150, 60, 40))


def test_placement_min_hot_load_by_hand():
    model = cp_model.CpModel()
    assign, hot = add_layer_placement(model, LOADS6, 3, "t")
    model.minimize(hot)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    assert solver.solve(model) == cp_model.OPTIMAL
    assert solver.value(hot) == 350 * Q // 1000
    ranks = [sorted(x for x in range(6) if (x, r) in assign and solver.boolean_value(assign[x, r]))
             for r in range(3)]
    assert sorted(map(sorted, ranks)) == [[0, 5], [1, 4], [2, 3]]


def test_placement_below_the_optimum_is_infeasible():
    model = cp_model.CpModel()
    _, hot = add_layer_placement(model, LOADS6, 3, "t")
    model.add(hot <= 350 * Q // 1000 - 1)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    assert solver.solve(model) == cp_model.INFEASIBLE


def test_placement_family_constants_and_extraction():
    # ep = 1: one rank holds both experts, hot = Q (a constant); ep = 2 = E: one expert per
    # rank, hot = the heavier expert (0.7 Q), a constant too.
    loads = ((7 * Q // 10, 3 * Q // 10),) * 3
    ctx = context([config(ep=1), config(ep=2)], loads=loads)
    run_families(ctx, [degrees, placement])
    assert ctx.placement.hot[1] == [Q] * 3
    assert ctx.placement.hot[2] == [7 * Q // 10] * 3
    status, solver = solve(ctx)
    assert status == cp_model.OPTIMAL
    assert placement.extract(ctx, solver, 2) == {0: ((0,), (1,)), 1: ((0,), (1,)), 2: ((0,), (1,))}


# ---------------------------------------------------------------- pipeline
# pp = 2, m = 2 micro-batches, dense times (10, 20, 30) ns, embedding 1, head 2, send 5:
#   split {0},{1,2}:  t = (10+1, 20+30+2) = (11, 52): TTFT = 11+52 + (2-1)*52 + (2-1)*5 = 120
#   split {0,1},{2}:  t = (10+20+1, 30+2) = (31, 32): TTFT = 31+32 + (2-1)*32 + 5     = 100
def test_pipeline_ttft_of_the_best_split_by_hand():
    ctx = context([config(pp=2, micro_batches=2)])
    run_families(ctx, TIMING)
    status, solver = solve(ctx, minimize=ctx.timing.ttft)
    assert status == cp_model.OPTIMAL
    assert solver.value(ctx.timing.ttft) == 100
    assert solver.value(ctx.timing.makespan) == 100  # no decode: makespan = TTFT
    assert pipeline.extract_stages(ctx, solver, 2) == ((0, 1), (2,))


def test_pipeline_bounds_are_tight_nothing_below_the_best_split():
    ctx = context([config(pp=2, micro_batches=2)])
    run_families(ctx, TIMING)
    ctx.model.add(ctx.timing.ttft <= 99)
    assert solve(ctx)[0] == cp_model.INFEASIBLE


def test_pipeline_decode_step_by_hand():
    # pp = 1, m = 1, decode dense (1, 2, 3), embedding 0, head 0: one stage of 6 ns, so
    # TPOT >= max(1, 1) * 6 + 0 = 6; prefill TTFT = 10+20+30+1+2 = 63; 4 output tokens:
    # makespan = 63 + 4 * 6 = 87.
    decode = phase(dense_ns=(1, 2, 3), embed_ns=0, head_ns=0)
    ctx = context([config(decode=decode)], inst=instance(output_tokens=4))
    run_families(ctx, TIMING)
    status, solver = solve(ctx, minimize=ctx.timing.makespan)
    assert status == cp_model.OPTIMAL
    assert (solver.value(ctx.timing.ttft), solver.value(ctx.timing.tpot)) == (63, 6)
    assert solver.value(ctx.timing.makespan) == 87


# ---------------------------------------------------------------- memory
# Per GPU: activations 10, layer weights 100 each, embedding 50 (first stage), head 50 (last):
#   pp = 1: 10 + 300 + 50 + 50 = 410 bytes
#   pp = 2: {0},{1,2}: (10+100+50, 10+200+50) = (160, 260); {0,1},{2}: (260, 160): peak 260
def test_memory_keeps_the_configuration_that_fits():
    ctx = context([config(pp=1), config(pp=2)], cap_bytes=300)
    run_families(ctx, TIMING + [memory])
    status, solver = solve(ctx)
    assert status == cp_model.OPTIMAL
    assert [solver.value(var) for var in ctx.choice.config] == [0, 1]  # 410 > 300 >= 260


def test_memory_one_byte_short_is_infeasible():
    ctx = context([config(pp=1), config(pp=2)], cap_bytes=259)
    run_families(ctx, TIMING + [memory])
    assert solve(ctx)[0] == cp_model.INFEASIBLE


def test_memory_requirement_off_lifts_the_cap():
    ctx = context([config(pp=1)], cap_bytes=409, enforced=())
    run_families(ctx, TIMING + [memory])
    status, solver = solve(ctx)
    assert status == cp_model.OPTIMAL
    assert solver.value(ctx.requirement["memory"]) == 0  # 410 > 409: only with memory off


# ---------------------------------------------------------------- latency
@pytest.mark.parametrize("limit_ns, expected", [(100, cp_model.OPTIMAL), (99, cp_model.INFEASIBLE)])
def test_latency_ttft_limit(limit_ns, expected):
    # The best split of the pipeline test reaches TTFT 100 (see above).
    ctx = context([config(pp=2, micro_batches=2)], limits_ns={"ttft": limit_ns})
    run_families(ctx, TIMING + [latency])
    status, solver = solve(ctx)
    assert status == expected
    if expected == cp_model.OPTIMAL:
        assert solver.value(ctx.timing.ttft) <= limit_ns


@pytest.mark.parametrize("limit_ns, expected", [(6, cp_model.OPTIMAL), (5, cp_model.INFEASIBLE)])
def test_latency_tpot_limit(limit_ns, expected):
    # One decode step takes 6 ns (see test_pipeline_decode_step_by_hand).
    decode = phase(dense_ns=(1, 2, 3), embed_ns=0, head_ns=0)
    ctx = context([config(decode=decode)], inst=instance(output_tokens=4), limits_ns={"tpot": limit_ns})
    run_families(ctx, TIMING + [latency])
    assert solve(ctx)[0] == expected


# ---------------------------------------------------------------- throughput
@pytest.mark.parametrize("limit_ns, expected", [(63, cp_model.OPTIMAL), (62, cp_model.INFEASIBLE)])
def test_throughput_makespan_limit(limit_ns, expected):
    # pp = 1, no decode: makespan = TTFT = 10+20+30 + 1 + 2 = 63 ns.
    ctx = context([config()], limits_ns={"throughput": limit_ns})
    run_families(ctx, TIMING + [throughput])
    status, solver = solve(ctx)
    assert status == expected
    if expected == cp_model.OPTIMAL:
        assert solver.value(ctx.timing.makespan) == 63


def test_a_requirement_switched_off_does_not_bind():
    ctx = context([config()], limits_ns={"throughput": 62}, enforced=())
    run_families(ctx, TIMING + [throughput])
    status, solver = solve(ctx)
    assert status == cp_model.OPTIMAL
    assert solver.value(ctx.requirement["throughput"]) == 0


# ---------------------------------------------------------------- the family interface
def test_every_family_declares_needs_and_provides():
    import constraints
    provided = set()
    for family in constraints.FAMILIES:
        assert set(family.NEEDS) <= provided, family.__name__  # the standard order is valid
        if family.PROVIDES is not None:
            provided.add(family.PROVIDES)
    assert provided == {"degrees", "placement", "pipeline"}


def test_a_family_run_out_of_order_is_a_clear_error():
    ctx = context([config()])
    with pytest.raises(FamilyOrderError, match="constraints.pipeline.*needs.*degrees"):
        run_families(ctx, [pipeline])
    ctx = context([config()])
    with pytest.raises(FamilyOrderError, match="'pipeline' variables"):
        _ = ctx.timing  # read before any family provided it
