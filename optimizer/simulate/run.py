"""``moeopt simulate`` as a library call: read the instance and plan (aggregated, or
disaggregated when ``plan.pools.is_disagg``), build the requests, simulate (once per seed),
and summarise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.errors import InputError
from optimizer.inputs.files import load_model, read_json
from optimizer.inputs.schema import Instance, Workload
from optimizer.inputs.service import Requests, load_trace, make_requests
from optimizer.plan.pools import is_disagg
from optimizer.simulate.deployment import KNOBS, Deployment, deployment
from optimizer.simulate.disagg import DisaggDeployment, disagg_deployment
from optimizer.simulate.engine import Outcome, simulate, simulate_disagg
from optimizer.simulate.summary import pool_summary, summarize

HEADLINE = ("ttft_p90_s", "tpot_p90_ms", "goodput_rps", "slo_attainment")


@dataclass(frozen=True)
class Settings:
    requests: int = 10_000
    seed: int = 0
    repeats: int = 1
    warmup_fraction: float = 0.1
    routing: str = "least-loaded"
    max_running_requests: int | None = None
    prefill_chunk_tokens: int | None = None


def batch_requests(wl: Workload) -> Requests:
    """A static batch as requests all arriving at 0 (at least one output token each)."""
    n = wl.batch_sequences
    return Requests(np.full(n, wl.prompt_tokens, dtype=np.int64),
                    np.full(n, max(1, wl.output_tokens), dtype=np.int64), np.zeros(n))


def prepare(instance_path: str, plan_path: str, s: Settings
            ) -> tuple[Instance, Deployment | DisaggDeployment]:
    inst = load_model(instance_path, Instance, "instance")
    doc = read_json(plan_path, "plan")
    if not isinstance(doc, dict):
        raise InputError(f"plan {plan_path}: expected a JSON object")
    options = {"max_running_requests": s.max_running_requests,
               "prefill_chunk_tokens": s.prefill_chunk_tokens}
    if is_disagg(doc):
        return inst, disagg_deployment(inst, doc, options, plan_path)
    return inst, deployment(inst, doc, options)


def simulate_any(dep: Deployment | DisaggDeployment, reqs: Requests, routing: str) -> Outcome:
    if isinstance(dep, DisaggDeployment):
        return simulate_disagg(dep.prefill, dep.decode, dep.transfer.ns, reqs, routing)
    return simulate(dep, reqs, routing)


def _knobs(dep: Deployment) -> dict:
    return {k: getattr(dep.knobs, k) for k in KNOBS}


def describe(dep: Deployment | DisaggDeployment, out: Outcome, warmup: float) -> dict:
    """The deployment's keys of the summary (aggregated: as before; disaggregated: per pool
    and the transfer)."""
    if not isinstance(dep, DisaggDeployment):
        return {"replicas": dep.replicas, "num_gpus": dep.num_gpus,
                "kv_capacity_tokens_per_replica": dep.kv_capacity_tokens, **_knobs(dep)}
    pools = {}
    for pool_dep, stats in zip(dep.pools, out.pools):
        pools[pool_dep.role] = {"queues": pool_dep.replicas, "num_gpus": pool_dep.num_gpus,
                                "kv_capacity_tokens_per_queue": pool_dep.kv_capacity_tokens,
                                **_knobs(pool_dep),
                                **pool_summary(out, stats, warmup, pool_dep.knobs.max_running_requests)}
    t = dep.transfer
    prompts = out.prompt_tokens[~out.rejected]
    moved = out.transfer_ns[~out.rejected] / 1e9
    return {"mode": "disagg", "num_gpus": dep.num_gpus, "pools": pools,
            "transfer": {"link": t.link, "links": t.links,
                         "kv_bytes_per_request_mean": float(np.mean([t.kv_bytes(int(s)) for s in prompts]))
                         if len(prompts) else 0.0,
                         "transfer_s_mean": float(moved.mean()) if len(moved) else 0.0,
                         "transfer_s_max": float(moved.max()) if len(moved) else 0.0}}


def run(instance_path: str, plan_path: str, s: Settings
        ) -> tuple[dict, Outcome, Deployment | DisaggDeployment]:
    """(summary of the first seed plus per-seed figures, its outcome, the deployment)."""
    inst, dep = prepare(instance_path, plan_path, s)
    wl = inst.workload
    trace = load_trace(wl, instance_path) if wl.kind == "service" else None
    warmup = s.warmup_fraction if wl.kind == "service" else 0.0
    runs = []
    for seed in range(s.seed, s.seed + s.repeats):
        reqs = make_requests(wl, s.requests, seed, trace) if wl.kind == "service" else batch_requests(wl)
        out = simulate_any(dep, reqs, s.routing)
        runs.append((seed, out, summarize(out, inst.requirements, warmup)))
    seed, out, summary = runs[0]
    summary = {**summary, "seed": seed, **describe(dep, out, warmup)}
    if s.repeats > 1:
        summary["seeds"] = [{"seed": k, **{key: r[key] for key in HEADLINE}} for k, _, r in runs]
    return summary, out, dep


def output_paths(instance: Instance, output: str | None) -> tuple[Path, Path]:
    """(JSON, PNG): ``output`` and the PNG beside it, else results/<name>/simulate.*"""
    json_path = Path(output) if output else Path("results") / instance.name / "simulate.json"
    return json_path, json_path.with_suffix(".png")
