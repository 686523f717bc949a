"""TensorRT-LLM: ``trtllm-serve`` and the extra LLM API options YAML (WideEP load balancer)."""

from __future__ import annotations

from pathlib import Path

import yaml

from optimizer.costs.layout import GpuSlot
from optimizer.errors import InputError
from optimizer.output.export.common import (
    Export,
    Launch,
    Split,
    comment,
    instance_devices,
    launch_sh,
    node_count,
    node_fill_notes,
    rank_map_text,
    readme,
    seat_warnings,
    seats,
    shell_command,
    split_instances,
)
from optimizer.output.export.launch_settings import (
    EXCHANGE_NAMES,
    RUNTIME_VERSIONS,
    LaunchSettings,
    kv_dtype_flag,
    missing_warning,
    version_line,
)
from optimizer.plan.files import ExpertMap, PlanData

# ----------------------------------------------------------------------------------------------
# TensorRT-LLM


def _trtllm_rule(g: GpuSlot, split: Split, p: PlanData) -> tuple[int, int]:
    # Mapping: pp_rank = rank // tp; moe_ep_rank = tp_rank % moe_ep (EP fastest, mapping.py).
    world = split.moe_world
    tp_rank = split.local_dp[g.rank] if split.dp > 1 else g.tp_rank
    return g.stage * world + tp_rank, tp_rank % p.deg.ep


def trtllm_serving_settings(s: LaunchSettings, dp: int) -> tuple[dict, list[str]]:
    """LLM API keys of the plan's workload, and warnings. ``max_batch_size`` and
    ``max_num_tokens`` are per rank, and an attention-DP rank is one of the plan's replicas.
    ``kv_cache_config.free_gpu_memory_fraction`` is the KV pool's share of the memory left
    after the weights and the warm-up step: the plan's KV over (GPU - the plan's other parts);
    a service plan states only its total, so the fraction is left at the default there."""
    kv_cache: dict = {}
    kv = kv_dtype_flag("trtllm", s)
    if kv is not None:
        kv_cache["dtype"] = kv
    warnings = []
    if s.weights_gb is not None:
        free_gb = s.gpu_memory_gb - (s.total_gb - s.kv_cache_gb)
        fraction = LaunchSettings(0, 0, None, s.kv_dtype, None, None, 0.0,
                                  free_gb).fraction(s.kv_cache_gb)
        if fraction is not None:
            kv_cache["free_gpu_memory_fraction"] = fraction
        else:
            warnings.append(s.memory_warning() or "the plan's KV cache does not fit")
    else:
        warnings.append("kv_cache_config.free_gpu_memory_fraction left at TensorRT-LLM's default: "
                        "the service plan states only its total memory per GPU "
                        f"({s.total_gb:.2f} GB), not the KV pool's share")
    doc: dict = {"max_batch_size": s.max_running_requests,
                 "max_num_tokens": max(s.chunk_tokens, s.max_running_requests),
                 "enable_chunked_prefill": True}
    if s.context_tokens is not None:
        doc["max_seq_len"] = s.context_tokens
    if kv_cache:
        doc["kv_cache_config"] = kv_cache
    return doc, warnings


def export_trtllm(p: PlanData, out_dir: Path, serving: LaunchSettings | None = None,
                  pd: tuple[list[tuple[str, object | None]], dict] | None = None) -> Export:
    """``pd``: (trtllm-serve flags, LLM API keys) of one pool replica of a disaggregated plan
    (``export.disagg``): the flags go after ``--extra_llm_api_options``, the keys into its YAML."""
    split = split_instances(p, "trtllm")
    d, e = p.deg, p.experts
    if split.tp > 1 and split.dp > 1:
        raise InputError(
            f"trtllm: attention TP{split.tp} x DP{split.dp} per instance cannot be expressed: "
            "enable_attention_dp gives each of the tensor_parallel_size ranks its own attention "
            "(attention TP 1), without it attention is TP over all ranks")
    tp = split.moe_world
    if d.etp * d.ep != tp:
        raise InputError(f"trtllm: moe_tp*moe_ep = {d.etp}*{d.ep} != tensor_parallel_size={tp}")
    if e.num_slots % d.ep or e.num_slots < e.num_experts:
        raise InputError(f"trtllm: num_slots={e.num_slots} must be >= {e.num_experts} experts and "
                         f"divisible by moe_expert_parallel_size={d.ep}")
    placed = seats(p, split, _trtllm_rule)
    note = (f" (TensorRT-LLM orders MoE ranks EP-fastest, moe_ep_rank = tp_rank % {d.ep}, "
            "the plan ETP-fastest)") if d.etp > 1 else ""
    warnings = seat_warnings(p, split, placed, "trtllm", note)
    settings = {"tensor_parallel_size": tp, "pipeline_parallel_size": d.pp,
                "moe_expert_parallel_size": d.ep, "moe_tensor_parallel_size": d.etp,
                "enable_attention_dp": split.dp > 1, "pp_partition": [len(s) for s in p.stages]}
    if serving is not None:
        extra, more = trtllm_serving_settings(serving, split.dp)
        settings.update(extra)
        warnings += more
    else:
        warnings.append(missing_warning("trtllm"))
    if pd is not None:
        settings.update(pd[1])
    balancer = d.ep > 1 or e.redundant > 0
    yaml = trtllm_yaml(settings, e if balancer else None,
                       f"plan {p.name}: one instance of {tp * d.pp} GPUs, launch {split.count}, "
                       + version_line("trtllm"))
    world = tp * d.pp
    args: list[tuple[str, object | None]] = [
        ("--tp_size", tp), ("--pp_size", d.pp), ("--ep_size", d.ep),
        ("--extra_llm_api_options", '"$HERE/extra_llm_api_options.yaml"')]
    args += pd[0] if pd is not None else []
    if split.count > 1:
        args.append(("--port", '"$PORT"'))
    nnodes = node_count(world, p.gpus_per_node)
    prog = ["trtllm-serve", '"$MODEL"']
    if nnodes > 1:
        prog = ["srun", f"-N {nnodes}", f"--ntasks {world}",
                f"--ntasks-per-node {min(world, p.gpus_per_node)}", "trtllm-llmapi-launch"] + prog
    notes = list(p.notes)
    notes += node_fill_notes(world, p.gpus_per_node)
    if balancer:
        notes.append("moe_config.backend WIDEEP: the static load balancer (num_slots + "
                     "initial_global_assignments) is the WideEP EPLB path of examples/wide_ep")
    else:
        notes.append("EP1 without replicas: every GPU holds all experts, no moe_config written")
    if d.ep > 1:
        notes.append(f"the plan prices the MoE token exchange as {EXCHANGE_NAMES[p.moe_token_exchange]} "
                     "(hardware.moe_token_exchange); no option of TensorRT-LLM's LLM API chooses it, "
                     "so this export sets none: check which path the server's MoE backend runs")
    if split.count > 1:
        notes.append(f"TensorRT-LLM has no DP degree: launch {split.count} separate instances "
                     "(the plan's EDP copies) behind a load balancer")
    summary = dict(settings, runtime_version=RUNTIME_VERSIONS["trtllm"])
    ex = Export("trtllm", {}, [Launch(shell_command(prog, args))], {}, split.count, world, summary,
                warnings, notes, (), instance_devices(p, split, placed))
    ex.files["extra_llm_api_options.yaml"] = yaml
    ex.files["launch.sh"] = launch_sh(ex, f"TensorRT-LLM launch for plan {p.name}, "
                                          + version_line("trtllm"))
    body = [version_line("trtllm"), "", "files:",
            "  extra_llm_api_options.yaml  degrees, pp_partition and (EP > 1) moe_config.load_balancer "
            f"(num_slots {e.num_slots}, initial_global_assignments for {len(e.moe_layers)} MoE "
            f"layers keyed by layer index, layer_updates_per_iter 0 = static); slots "
            f"[r*{e.slots_per_rank}, (r+1)*{e.slots_per_rank}) belong to EP rank r",
            "", "mapping: world = tensor_parallel_size * pipeline_parallel_size; MoE world = "
            "tensor_parallel_size = moe_tp * moe_ep; attention DP = enable_attention_dp over the "
            "tp ranks; the plan's EDP copies are separate instances."]
    ex.files["README.txt"] = readme(p, ex, f"TensorRT-LLM export of {p.name}", body,
                                     rank_map_text(p, split, placed))
    return ex


def trtllm_yaml(settings: dict, e: ExpertMap | None, note: str) -> str:
    """The YAML document (written by PyYAML's safe dumper, never by hand) under one comment
    line (``note`` quoted like a shell comment: no line break can get through)."""
    doc = dict(settings)
    if e is not None:
        doc["moe_config"] = {"backend": "WIDEEP", "load_balancer": {
            "num_slots": e.num_slots, "layer_updates_per_iter": 0,
            "initial_global_assignments": {layer: list(e.slots[layer]) for layer in e.moe_layers}}}
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=1 << 30)
    return (f"# TensorRT-LLM extra LLM API options written by moeopt export ({comment(note)})\n"
            + body)
