"""SGLang: launch arguments and the per-layer ``--init-expert-location`` JSON."""

from __future__ import annotations

import json
from pathlib import Path

from optimizer.costs.layout import GpuSlot
from optimizer.errors import InputError
from optimizer.output.export.common import (
    Export,
    Launch,
    Split,
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
    stage_partition,
    uneven_stages,
)
from optimizer.output.export.launch_settings import (
    RUNTIME_VERSIONS,
    LaunchSettings,
    kv_dtype_flag,
    missing_warning,
    moe_exchange_args,
    version_line,
)
from optimizer.plan.files import ExpertMap, PlanData

# ----------------------------------------------------------------------------------------------
# SGLang


def _sglang_rule(g: GpuSlot, split: Split, p: PlanData) -> tuple[int, int]:
    # DP-attention: attn_tp_rank = tp_rank % attn_tp, attn_dp_rank = tp_rank // attn_tp;
    # moe_ep_rank = tp_rank // (tp_size / ep_size) (engine.py); PP stages are the outer index.
    world = split.moe_world
    tp_rank = split.local_dp[g.rank] * split.tp + g.tp_rank
    return g.stage * world + tp_rank, tp_rank // (world // p.deg.ep)


def sglang_serving_args(s: LaunchSettings, dp: int) -> list[tuple[str, object]]:
    """The flags of the plan's workload. SGLang divides --max-running-requests and
    --chunked-prefill-size by the attention-DP size under DP-attention
    (arg_groups/parallel_hook.py, mem_cache/kv_cache_configurator.py in 0.5.23), so both are
    the per-replica figures times ``dp``. --mem-fraction-static is the weights plus the KV
    pool over the GPU's memory (the plan's total for a service, which states only that)."""
    args: list[tuple[str, object]] = []
    kv = kv_dtype_flag("sglang", s)
    if kv is not None:
        args.append(("--kv-cache-dtype", kv))
    static_gb = s.total_gb if s.weights_gb is None else s.weights_gb + s.kv_cache_gb
    args += [("--max-running-requests", s.max_running_requests * dp),
             ("--chunked-prefill-size", s.chunk_tokens * dp),
             ("--max-prefill-tokens", s.chunk_tokens * dp)]
    if s.context_tokens is not None:
        args.append(("--context-length", s.context_tokens))
    fraction = s.fraction(static_gb)
    if fraction is not None:
        args.append(("--mem-fraction-static", fraction))
    return args


def export_sglang(p: PlanData, out_dir: Path, serving: LaunchSettings | None = None,
                  pd: list[tuple[str, object | None]] | None = None) -> Export:
    """``pd``: the prefill/decode flags of one pool replica of a disaggregated plan
    (``export.disagg``), appended after the workload's flags."""
    split = split_instances(p, "sglang")
    d, e = p.deg, p.experts
    world = split.moe_world                         # SGLang --tp: the TP world of one stage
    if d.ep > world or world % d.ep:
        raise InputError(f"sglang: ep={d.ep} must divide the TP world tp={world} (ep <= tp, "
                         "moe_tp = tp/ep)")
    if e.num_slots % d.ep:
        raise InputError(f"sglang: {e.num_slots} physical experts are not divisible by ep={d.ep}")
    placed = seats(p, split, _sglang_rule)
    warnings = seat_warnings(p, split, placed, "sglang")
    args: list[tuple[str, object | None]] = [("--model-path", '"$MODEL"'), ("--tp-size", world)]
    if split.dp > 1:
        args += [("--dp-size", split.dp), ("--enable-dp-attention", None)]
    if d.pp > 1:
        args.append(("--pp-size", d.pp))
    # no --ep-dispatch-algorithm: SGLang 0.5.23 refuses "static" with the default all-to-all
    # backend "none" (which hybrid EP < TP needs) and, left unset with a non-trivial
    # --init-expert-location, picks "dynamic" there and "static" under an a2a backend
    # (arg_groups/parallel_hook.py, _handle_eplb_and_dispatch)
    args += [("--ep-size", d.ep), ("--ep-num-redundant-experts", e.redundant),
             ("--init-expert-location", '"$HERE/expert_location.json"')]
    exchange, warnings_exchange = moe_exchange_args("sglang", p, world)
    args += exchange
    if serving is not None:
        args += sglang_serving_args(serving, split.dp)
    args += pd or []
    inst_world = world * d.pp
    nnodes = node_count(inst_world, p.gpus_per_node)
    needs: tuple[str, ...] = ()
    if nnodes > 1:
        args += [("--nnodes", nnodes), ("--node-rank", '"$NODE_RANK"'),
                 ("--dist-init-addr", '"$HEAD_ADDR:5000"')]
        needs = ("NODE_RANK", "HEAD_ADDR")
    env = {"SGLANG_PP_LAYER_PARTITION": stage_partition(p)} if uneven_stages(p) else {}
    if split.count > 1:
        args.append(("--port", '"$PORT"'))
    cmd = shell_command(["python3", "-m", "sglang.launch_server"], args)
    settings = {"tp": world, "dp": split.dp, "enable_dp_attention": split.dp > 1, "pp_size": d.pp,
                "ep": d.ep, "moe_tp": world // d.ep, "attn_tp": split.tp,
                "ep_num_redundant_experts": e.redundant, "num_physical_experts": e.num_slots,
                "runtime_version": RUNTIME_VERSIONS["sglang"]}
    settings.update({flag.lstrip("-").replace("-", "_"): value for flag, value in exchange})
    warnings += warnings_exchange
    if serving is not None:
        settings.update({flag.lstrip("-").replace("-", "_"): value
                         for flag, value in sglang_serving_args(serving, split.dp)})
        warnings += [w for w in [serving.memory_warning()] if w]
    else:
        warnings.append(missing_warning("sglang"))
    notes = list(p.notes)
    notes += node_fill_notes(inst_world, p.gpus_per_node)
    if d.ep < world:
        notes.append(f"hybrid EP{d.ep} x MoE-TP{world // d.ep}: use --moe-a2a-backend none (the "
                     "default); deepep/mooncake/flashinfer force ep = tp")
    if split.count > 1:
        notes.append(f"{split.count} independent servers (the plan's EDP copies); put a router "
                     "(e.g. sglang-router) in front. SGLang's own --dp without DP-attention would "
                     "pack replicas into one server, but only inside a node")
    ex = Export("sglang", {}, [Launch(cmd)], env, split.count, inst_world, settings, warnings,
                notes, needs, instance_devices(p, split, placed))
    ex.files["expert_location.json"] = sglang_map_json(e)
    ex.files["launch.sh"] = launch_sh(ex, f"SGLang launch for plan {p.name}, "
                                          + version_line("sglang"))
    body = [version_line("sglang"), "", "files:",
            f"  expert_location.json  {{\"physical_to_logical_map\": [{e.num_layers}][{e.num_slots}]}}: one "
            "row per hidden layer (dense layers get the trivial map p mod E); physical slot p lives "
            f"on EP rank p // {e.slots_per_rank}",
            "", "mapping: moeopt attention TP x DP per stage -> SGLang --tp = TP*DP GPUs with "
            "DP-attention (attn_tp = tp/dp) when DP > 1; MoE EP x ETP -> --ep, moe_tp = tp/ep."]
    ex.files["README.txt"] = readme(p, ex, f"SGLang export of {p.name}", body,
                                     rank_map_text(p, split, placed))
    return ex


def sglang_map_json(e: ExpertMap) -> str:
    rows = ",\n".join("    " + json.dumps(e.row(layer), separators=(",", ":"))
                      for layer in range(e.num_layers))
    return "{\n  \"physical_to_logical_map\": [\n" + rows + "\n  ]\n}\n"

