"""Service plans: the plan file of a service (degrees, stages, placement, layout, and the
per-replica serving knobs) and its evaluation from the plan alone (``moeopt check``).

Metrics under the contract's names are taken at the operating rate: the instance's
``arrival_rate_rps`` when it gives one, else the plan's goodput. TPOT percentiles equal the
mean TPOT (docs/serving-model.md).
"""

from __future__ import annotations

from dataclasses import asdict

from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.serving.candidates import ServiceCandidate, evaluate_group
from optimizer.costs.serving.knobs import ReplicaMemory, ServingKnobs
from optimizer.costs.serving.metrics import Replica, ServiceLoad, Slo
from optimizer.costs.serving.replica import replica, replica_memory
from optimizer.costs.tables import LinkFacts
from optimizer.costs.timing import hot_load
from optimizer.costs.units import bytes_to_gb, rate_target_to_int
from optimizer.inputs.schema import Instance, Workload
from optimizer.plan.evaluate import Check, Plan
from optimizer.plan.files import PlanFile, _rule, check_structure, plan_head

KNOB_NAMES = ("max_running_requests", "prefill_chunk_tokens", "prefill_micro_batches", "decode_micro_batches")
# Structural rules of a static batch that a service has no counterpart of.
_BATCH_ONLY = ("dp <= batch sequences", "micro_batches <= sequences per replica")


def service_slo(inst: Instance) -> Slo:
    req = inst.requirements
    return Slo(req.max_ttft_s, req.max_tpot_ms, req.max_e2e_latency_s, req.percentile)


def plan_replica(inst: Instance, plan: Plan, load: ServiceLoad) -> Replica:
    """The serving model's replica of the plan: its own stages, placement and layout."""
    moe_ids = inst.model.moe_layer_ids
    hot = {l: hot_load(row, plan.placement[l]) for l, row in zip(moe_ids, expert_loads(inst))}
    return replica(inst, plan.deg, LinkFacts.of(plan.slots), plan.stages, hot, load)


def evaluate_service_plan(inst: Instance, plan: Plan, knobs: ServingKnobs, load: ServiceLoad) -> ServiceCandidate:
    """The plan's candidate: its own stages, placement and layout, the instance's lengths."""
    return evaluate_group(plan.deg, [knobs], plan_replica(inst, plan, load), load, service_slo(inst),
                          inst.workload.arrival_rate_rps)[0]


def peak_memory_bytes(inst: Instance, plan: Plan, knobs: ServingKnobs, load: ServiceLoad) -> int:
    mem = replica_memory(inst, plan.deg, plan.stages, load)
    return mem.peak_bytes(knobs.max_running_requests, knobs.prefill_chunk_tokens)


def runtime_pool_check(mem: ReplicaMemory, knobs: ServingKnobs, prefix: str = "") -> Check | None:
    """With ``hardware.kv_pool_runtime``: the B requests' KV caches at their final context
    against the pool that runtime carves out beside a step of C tokens (None without one)."""
    have = mem.runtime_kv_pool_bytes(knobs.prefill_chunk_tokens)
    if have is None:
        return None
    need = knobs.max_running_requests * mem.kv_bytes_per_request
    return Check(f"{prefix}kv_pool_of_{mem.runtime_pool.runtime}", bytes_to_gb(need), bytes_to_gb(have), "GB",
                 need <= have)


def service_metrics(c: ServiceCandidate, memory_bytes: int) -> dict[str, float]:
    """The contract's service metrics (plus extras) at the operating rate."""
    m = c.at_rate if c.at_rate is not None else c.at_goodput
    return {
        "rate_rps": m.rate_rps,
        "ttft_p50_s": m.ttft_p50_s,
        "ttft_p90_s": m.ttft_p90_s,
        "ttft_p99_s": m.ttft_p99_s,
        "tpot_p50_ms": m.tpot_p50_ms,
        "tpot_p90_ms": m.tpot_p90_ms,
        "e2e_latency_p90_s": m.e2e_p90_s,
        "goodput_rps": c.goodput_rps,
        "goodput_rps_per_gpu": c.goodput_rps_per_gpu,
        "sustainable_rps": c.sustainable_rps,
        "output_tokens_per_s_per_gpu": m.output_tokens_per_s_per_gpu,
        "max_output_tokens_per_s_per_gpu": c.throughput_tokens_per_s_per_gpu,
        "tokens_per_s_per_user": m.tokens_per_s_per_user,
        "utilization": m.utilization,
        "running_requests_per_replica": m.running_requests,
        "max_memory_gb": bytes_to_gb(memory_bytes),
    }


def service_checks(inst: Instance, c: ServiceCandidate, memory_bytes: int) -> list[Check]:
    """Memory at the knobs' peak, the SLOs at the instance's rate, the goodput target."""
    from optimizer.costs.units import gb_to_bytes_floor
    checks = [Check("memory_per_gpu", bytes_to_gb(memory_bytes), inst.memory_limit_gb, "GB",
                    memory_bytes <= gb_to_bytes_floor(inst.memory_limit_gb))]
    req, m = inst.requirements, c.at_rate
    p = req.percentile
    if m is not None:
        checks.append(Check("stable_at_arrival_rate", m.utilization, 1.0, "utilization", m.stable))
        if req.max_ttft_s is not None:
            checks.append(Check(f"ttft_p{p}", m.ttft_at(p), req.max_ttft_s, "s", m.stable and m.ttft_at(p) <= req.max_ttft_s))
        if req.max_tpot_ms is not None:
            checks.append(Check(f"tpot_p{p}", m.tpot_at(p), req.max_tpot_ms, "ms",
                                m.stable and m.tpot_at(p) <= req.max_tpot_ms))
        if req.max_e2e_latency_s is not None:
            e2e = m.ttft_at(p) + max(0, c.output_tokens - 1) * m.tpot_at(p) / 1e3
            checks.append(Check(f"e2e_latency_p{p}", e2e, req.max_e2e_latency_s, "s",
                                m.stable and e2e <= req.max_e2e_latency_s))
    if req.min_goodput_rps is not None:
        checks.append(Check("goodput", c.goodput_rps, req.min_goodput_rps, "requests/s",
                            c.goodput_score >= rate_target_to_int(req.min_goodput_rps)))
    return checks


def service_plan_to_json(plan: Plan, c: ServiceCandidate, memory_bytes: int, status: str, solver: dict) -> dict:
    """The plan file of a service: the static plan's structure, the per-replica knobs and
    the service metrics."""
    return {
        **plan_head(plan, status),
        "serving": {name: getattr(c.knobs, name) for name in KNOB_NAMES},
        "stages": [{"stage": j, "layers": list(layers)} for j, layers in enumerate(plan.stages)],
        "expert_placement": {str(layer): [list(r) for r in ranks]
                             for layer, ranks in sorted(plan.placement.items())},
        "gpus": [{"rank": s.rank, "node": s.node, "local_rank": s.local_rank, "stage": s.stage,
                  "tp_rank": s.tp_rank, "dp_rank": s.dp_rank, "ep_rank": s.ep_rank,
                  "etp_rank": s.etp_rank, "edp_rank": s.edp_rank} for s in plan.slots],
        "metrics": service_metrics(c, memory_bytes),
        "solver": solver,
    }


def knobs_from_file(f: PlanFile) -> ServingKnobs | None:
    """The plan's ``serving`` block (per-replica knobs, as ``moeopt simulate`` reads them),
    or None when it is missing or not four positive integers."""
    block = (f.model_extra or {}).get("serving")
    if not isinstance(block, dict):
        return None
    values = [block.get(name) for name in KNOB_NAMES]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 20 for v in values):
        return None
    return ServingKnobs(*values)


def service_plan_from_file(inst: Instance, f: PlanFile) -> tuple[Plan | None, ServingKnobs | None, list[Check]]:
    """Plan, knobs and structural checks of a service plan file (None when broken): the
    static plan's rules (``plan.files.check_structure``) on a stand-in batch instance, the
    batch-only rules dropped, plus the knob rules."""
    stand_in = inst.model_copy(update={"workload": Workload(batch_sequences=10**7, prompt_tokens=1)})
    plan, checks, _ = check_structure(stand_in, f)
    checks = [c for c in checks if c.name not in _BATCH_ONLY]
    knobs = knobs_from_file(f)
    checks.append(_rule("replica knobs: four positive integers", knobs is not None))
    if knobs is not None:
        checks.append(_rule("prefill_chunk_tokens >= max_running_requests",
                            knobs.prefill_chunk_tokens >= knobs.max_running_requests))
    if plan is None or not all(c.ok for c in checks):
        return None, knobs, checks
    return plan, knobs, checks


def check_service_plan(inst: Instance, f: PlanFile, load: ServiceLoad) -> tuple[dict, str, bool]:
    """(document, text, feasible?) of a service plan, every figure recomputed."""
    plan, knobs, checks = service_plan_from_file(inst, f)
    if plan is None:
        doc = {"feasible": False, "checks": [asdict(c) for c in checks], "metrics": {}}
        lines = ["Structure"] + [check_line(c) for c in checks] + ["plan is not valid"]
        return doc, "\n".join(lines) + "\n", False
    cand = evaluate_service_plan(inst, plan, knobs, load)
    memory = peak_memory_bytes(inst, plan, knobs, load)
    pool = runtime_pool_check(replica_memory(inst, plan.deg, plan.stages, load), knobs)
    checks = checks + service_checks(inst, cand, memory) + ([pool] if pool is not None else [])
    metrics = service_metrics(cand, memory)
    feasible = all(c.ok for c in checks)
    doc = {"feasible": feasible, "checks": [asdict(c) for c in checks], "metrics": metrics}
    lines = ["Checks"] + [check_line(c) for c in checks] + ["Metrics"]
    lines += [f"  {k:<34} {v:.6g}" for k, v in metrics.items()]
    lines.append("feasible: every constraint holds" if feasible else "INFEASIBLE: a constraint is violated")
    return doc, "\n".join(lines) + "\n", feasible


def check_line(c: Check) -> str:
    return f"  {'ok ' if c.ok else 'FAIL'} {c.name:<48} {c.value:.6g} (limit {c.limit:.6g} {c.unit})"
