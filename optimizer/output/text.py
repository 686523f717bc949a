"""Readable text for plans and checks (reshaping only; every figure comes from evaluate)."""

from __future__ import annotations

from optimizer.plan.evaluate import RELATION, Check, Evaluation, Plan
from optimizer.costs.expert_loads import expert_loads
from optimizer.inputs.schema import Instance
from optimizer.costs.units import LOAD_SCALE, bytes_to_gb


def _ranges(layers: tuple[int, ...]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


def degrees_line(plan: Plan, ev: Evaluation, inst: Instance) -> str:
    d = plan.deg
    nodes = len({s.node for s in plan.slots})
    return (f"GPUs {d.num_gpus} on {nodes} node(s) | attention TP {d.tp} x DP {d.dp} | "
            f"MoE EP {d.ep} x ETP {d.etp} x EDP {d.edp} | PP {d.pp} | micro-batches "
            f"{d.micro_batches} of {ev.costs.seqs_per_micro_batch} sequence(s) per DP replica")


def stage_lines(plan: Plan) -> list[str]:
    p = len(plan.stages)
    out = []
    for j, layers in enumerate(plan.stages):
        extra = (" + embedding" if j == 0 else "") + (" + LM head" if j == p - 1 else "")
        out.append(f"  stage {j}: layers {_ranges(layers)} ({len(layers)} layers){extra}")
    return out


def placement_lines(plan: Plan, inst: Instance) -> list[str]:
    loads = dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))
    out = []
    for layer, ranks in sorted(plan.placement.items()):
        rank_loads = [sum(loads[layer][x] for x in r) for r in ranks]
        mean = LOAD_SCALE / len(ranks)
        cells = " ".join(f"r{r}:{','.join(map(str, xs))}" for r, xs in enumerate(ranks))
        out.append(f"  layer {layer:>3}: hot/mean {max(rank_loads) / mean:5.3f} | {cells}")
    return out


def memory_lines(ev: Evaluation, limit_gb: float) -> list[str]:
    out = [f"  {'stage':>5} {'weights':>9} {'kv_cache':>9} {'activ.':>9} {'buffers':>9} "
           f"{'total':>9}   (GB per GPU, limit {limit_gb:g})"]
    for j, m in enumerate(ev.stage_memory):
        out.append(f"  {j:>5} {bytes_to_gb(m.weights):9.2f} {bytes_to_gb(m.kv_cache):9.2f} "
                   f"{bytes_to_gb(m.activations):9.2f} {bytes_to_gb(m.buffers):9.2f} "
                   f"{bytes_to_gb(m.total):9.2f}")
    return out


def check_lines(checks: list[Check]) -> list[str]:
    out = []
    for c in checks:
        relation = RELATION.get(c.name, "")
        if c.unit == "rule":
            out.append(f"  {c.name:<44} {'holds' if c.ok else 'VIOLATED'}")
        else:
            out.append(f"  {c.name:<16} {c.value:12.4g} {c.unit:<14} {relation:>2} {c.limit:<10g} "
                       f"{'ok' if c.ok else 'VIOLATED'}")
    return out


def metric_lines(ev: Evaluation) -> list[str]:
    m = ev.metrics()
    tpot = f", TPOT {m['tpot_ms']:.2f} ms, batch {m['batch_time_s']:.2f} s" if "tpot_ms" in m else ""
    return [f"  throughput {m['throughput_tokens_per_ms']:.1f} tokens/ms "
            f"({m['throughput_tokens_per_ms_per_gpu']:.2f} per GPU), TTFT {m['ttft_s']:.3f} s{tpot}, "
            f"max memory {m['max_memory_gb']:.2f} GB",
            f"  load imbalance {m['load_imbalance']:.3f} (worst layer), communication "
            f"{m['communication_ms']:.2f} ms and imbalance {m['imbalance_ms']:.2f} ms per GPU "
            f"over the batch, pipeline bubble {m['bubble_fraction']:.1%}"]


def solver_lines(solver: dict) -> list[str]:
    s = solver
    gap = "n/a" if s["gap"] is None else f"{s['gap']:.4f}"
    line = (f"  status {s['status']}, objective {s['objective']:.3f} ms (time lost per GPU to "
            f"communication, expert imbalance and pipeline idling), bound {s['bound']:.3f} ms, "
            f"gap {gap}, wall {s['wall_s']:.2f} s, "
            f"{s['configurations']} configurations")
    out = [line]
    if s.get("makespan_status"):
        out.append(f"  then makespan: status {s['makespan_status']}, {s['makespan_ms']:.3f} ms "
                   f"(bound {s['makespan_bound_ms']:.3f} ms)")
    return out


def plan_text(inst: Instance, plan: Plan, ev: Evaluation, status: str, solver: dict | None) -> str:
    """The whole readable plan."""
    lines = [f"moeopt plan for {plan.instance}: {status}", degrees_line(plan, ev, inst), "Stages"]
    lines += stage_lines(plan)
    lines += ["Experts per EP rank (rN: expert ids), hottest-rank load / mean"]
    lines += placement_lines(plan, inst)
    lines += ["Memory per GPU"] + memory_lines(ev, inst.memory_limit_gb)
    lines += ["Requirements"] + check_lines(ev.checks)
    lines += ["Metrics"] + metric_lines(ev)
    if solver:
        lines += ["Solver"] + solver_lines(solver)
    return "\n".join(lines) + "\n"
