"""Per-operator breakdown of a plan (``moeopt explain``): where prefill and decode time and
per-GPU memory go, each operator's achieved fraction of speed of light, and where its
efficiency comes from (a hardware profile's table, or the flat instance efficiencies).

Times are for one micro-batch through every stage (prefill) and one micro-batch of one
decode step, summed over the layers of all stages (the pipeline's fill and bubbles apart),
with each MoE layer at its hot-rank load: exactly the integer costs ``moeopt check`` uses.
Speed of light is the same model at 100 % of peak FLOP/s and HBM bandwidth, without a
profile; communication is its bytes over the link's full bandwidth, without latencies (the
MoE token exchange with the bytes of the kernel family priced: DeepEP's under a profile,
``k`` copies per token for the alpha-beta all-to-all, 2 x (EP-1) x T x h x a for the
all-gather + reduce-scatter); the elementwise kernels (norms, residual adds, activation
gates: timed only under a profile) are their bytes over the HBM bandwidth.
"""

from __future__ import annotations

from dataclasses import asdict

from optimizer.costs import exchange, profiled
from optimizer.costs import formulas as cm
from optimizer.costs.profile import Efficiency, efficiency_of
from optimizer.costs.tables import ACT_BYTES, LinkFacts, PhaseCosts, decode_context, stage_costs
from optimizer.costs.units import LOAD_SCALE, ceil_div, seconds_to_ns
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Plan, evaluate


class _AtPeak(Efficiency):
    """Every table answers eta = 1: the speed-of-light split of a profiled layer."""

    def gemm_eta(self, *args):
        return 1.0

    def attention_eta(self, *args):
        return 1.0


def _sol_instance(inst: Instance) -> Instance:
    gpu = inst.hardware.gpu.model_copy(update={"compute_efficiency": 1.0, "hbm_efficiency": 1.0})
    hw = inst.hardware.model_copy(update={"gpu": gpu, "profile": None, "intra_node_latency_us": 0.0,
                                          "inter_node_latency_us": 0.0})
    return inst.model_copy(update={"hardware": hw})


def _exchange_name(inst: Instance, eff) -> str:
    if inst.hardware.moe_token_exchange == "allgather":
        return "all-gather + reduce-scatter"
    return "all-to-all" if eff.flat else "DeepEP all-to-all"


def _source(inst: Instance, eff, op: str) -> str:
    gpu = inst.hardware.gpu
    flat = f"flat {gpu.compute_efficiency:.0%} FLOP/s, {gpu.hbm_efficiency:.0%} HBM"
    family = f" ({_exchange_name(inst, eff)})" if op == "moe_communication" else ""
    if eff.flat:
        return (flat if op not in ("tp_all_reduce", "moe_communication", "pipeline_send")
                else "alpha-beta (flat)" + family)
    name = inst.hardware.profile
    tables = {"linear": "gemm", "attention": "attention", "routed_experts": "grouped_gemm",
              "tp_all_reduce": "collectives", "moe_communication": "collectives", "lm_head": "gemm"}
    return f"profile {name}: {tables[op]}{family}" if op in tables else f"profile {name}: {flat}"


def _phase_ops(inst: Instance, phase: PhaseCosts, hot: dict[int, int], stages, tokens: int,
               decode: bool, deg, eff, sol: bool = False) -> dict[str, int]:
    """ns per operator group for one micro-batch through all stages; ``sol``: of the speed-
    of-light instance (``eff`` at peak), with the elementwise kernels' HBM time."""
    m = inst.model
    ops = {"linear": 0, "attention": 0, "elementwise": 0, "tp_all_reduce": 0, "routed_experts": 0,
           "moe_communication": 0, "embedding": phase.embed_ns, "lm_head": phase.head_ns,
           "pipeline_send": (len(stages) - 1) * phase.p2p_ns}
    for layer in range(m.num_layers):
        dense = phase.layer_dense_ns[layer] - phase.tp_comm_ns[layer]
        ops["tp_all_reduce"] += phase.tp_comm_ns[layer]
        if decode:
            ctx = cm.kv_tokens(m, layer, int(decode_context(inst)))
            flops = tokens * cm.decode_dense_flops_per_token_layer(m, ctx, layer)
            kv = tokens * ctx * cm.kv_bytes_per_token_layer(m, deg.tp)
        else:
            flops = tokens * cm.dense_flops_per_token_layer(m, inst.workload.prompt_tokens, layer)
            kv = tokens * cm.kv_bytes_per_token_layer(m, deg.tp)
        parts = profiled.dense_parts_s(inst, deg.tp, layer, tokens, flops, kv, tokens if decode else 0, eff)
        if sol:  # the kernels' bytes / HBM bandwidth (the GPU at 100 %), outside the roofline
            ops["elementwise"] += seconds_to_ns(parts["elementwise"])
        if isinstance(eff, _AtPeak):  # a flat layer is one roofline: no separate elementwise kernels
            parts = {**parts, "elementwise": 0.0}
        whole = max(sum(parts.values()), 1e-30)
        linear, elementwise = round(dense * parts["linear"] / whole), round(dense * parts["elementwise"] / whole)
        ops["linear"] += linear
        ops["elementwise"] += elementwise
        ops["attention"] += dense - linear - elementwise
        if layer in hot:
            total, comm = phase.moe_ns(hot[layer]), phase.moe_comm_ns(hot[layer])
            ops["routed_experts"] += total - comm
            ops["moe_communication"] += comm
    return ops


def _moe_comm_sol_ns(inst: Instance, deg, facts: LinkFacts, hot: dict[int, int], tokens: int) -> int:
    """Speed of light of the MoE communication over every MoE layer at its hot load, ns: the
    token exchange's bytes in the kernel family priced (``exchange.token_exchange_sol_s``)
    plus the ETP all-gather and reduce-scatter, each over its link's bandwidth."""
    m = inst.model
    scaled_s, fixed_s = exchange.token_exchange_sol_s(inst, deg.ep, tokens / deg.tp,
                                                      facts.ep_local_peers, facts.ep_remote_peers)
    gather_bytes = tokens * m.top_k * deg.etp * deg.ep / deg.tp * m.hidden_size * ACT_BYTES
    etp_bw, _ = cm.link(inst.hardware, facts.etp_inter_node)
    scaled_ns = seconds_to_ns(scaled_s + 2 * cm.allgather_s(gather_bytes, deg.etp, etp_bw, 0.0))
    return sum(ceil_div(scaled_ns * load, LOAD_SCALE) + seconds_to_ns(fixed_s) for load in hot.values())


def _sol_fraction(sol_ns: int, ns: int) -> float | None:
    """Speed-of-light time / time; None when there is no comparable figure (an operator the
    flat model does not time separately, or no time at all)."""
    if not ns or not sol_ns:
        return None
    return sol_ns / ns


def explain(inst: Instance, plan: Plan) -> dict:
    """The breakdown document (times in ms, memory in GB, shares and SOL fractions 0..1)."""
    ev = evaluate(inst, plan)
    eff = efficiency_of(inst)
    sol_inst = _sol_instance(inst)
    sol_costs = stage_costs(sol_inst, plan.deg, LinkFacts.of(plan.slots))  # its links without latency
    peak = _AtPeak(sol_inst.hardware.gpu, None)
    peak.flat = False
    split = eff if not eff.flat else peak
    hot = dict(zip(inst.model.moe_layer_ids, ev.hot_loads))
    c = ev.costs
    doc: dict = {"instance": inst.name, "profile": inst.hardware.profile or "none (flat)",
                 "degrees": asdict(plan.deg), "phases": {}}
    phases = [("prefill", c.prefill, sol_costs.prefill, c.seqs_per_micro_batch * inst.workload.prompt_tokens, False)]
    if c.decode is not None:
        phases.append(("decode_step", c.decode, sol_costs.decode, c.seqs_per_micro_batch, True))
    facts = LinkFacts.of(plan.slots)
    for name, phase, sol_phase, tokens, decode in phases:
        ops = _phase_ops(inst, phase, hot, plan.stages, tokens, decode, plan.deg, split)
        sol = _phase_ops(sol_inst, sol_phase, hot, plan.stages, tokens, decode, plan.deg, peak, sol=True)
        sol["moe_communication"] = _moe_comm_sol_ns(inst, plan.deg, facts, hot, tokens)
        total = sum(ops.values())
        doc["phases"][name] = {
            "total_ms": total / 1e6,
            "operators": [{"operator": op, "time_ms": ns / 1e6, "share": ns / total if total else 0.0,
                           "sol_fraction": _sol_fraction(sol[op], ns), "source": _source(inst, eff, op)}
                          for op, ns in ops.items()]}
    worst = max(range(len(ev.stage_memory)), key=lambda j: ev.stage_memory[j].total)
    mem = ev.stage_memory[worst]
    parts = {"weights": mem.weights, "kv_cache": mem.kv_cache, "activations": mem.activations,
             "buffers": mem.buffers}
    doc["memory"] = {"stage": worst, "total_gb": mem.total / 1e9,
                     "parts": [{"part": k, "gb": v / 1e9, "share": v / mem.total} for k, v in parts.items()]}
    doc["metrics"] = {k: v for k, v in ev.metrics().items() if k in ("ttft_s", "tpot_ms", "max_memory_gb",
                                                                    "throughput_tokens_per_ms_per_gpu")}
    return doc


def render(doc: dict) -> str:
    """The breakdown as text tables."""
    lines = [f"instance {doc['instance']}  profile {doc['profile']}"]
    for name, ph in doc["phases"].items():
        lines.append(f"\n{name}: {ph['total_ms']:.3f} ms per micro-batch through all stages")
        lines.append(f"  {'operator':<18} {'time_ms':>12} {'share':>7} {'SOL':>6}  source")
        for row in ph["operators"]:
            sol = "-" if row["sol_fraction"] is None else f"{row['sol_fraction']:.0%}"
            lines.append(f"  {row['operator']:<18} {row['time_ms']:>12.3f} {row['share']:>7.1%} {sol:>6}  {row['source']}")
    mem = doc["memory"]
    lines.append(f"\nmemory per GPU (stage {mem['stage']}): {mem['total_gb']:.2f} GB")
    for row in mem["parts"]:
        lines.append(f"  {row['part']:<18} {row['gb']:>12.3f} {row['share']:>7.1%}")
    lines.append("\nmetrics: " + ", ".join(f"{k}={v:.6g}" for k, v in doc["metrics"].items()))
    return "\n".join(lines) + "\n"
