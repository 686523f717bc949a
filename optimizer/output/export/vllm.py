"""vLLM: ``vllm serve`` arguments and what vLLM cannot take (an explicit expert map)."""

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
    q,
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
# vLLM


def _vllm_rule(g: GpuSlot, split: Split, p: PlanData) -> tuple[int, int]:
    # Rank tensor (DP, PP, PCP, TP), TP fastest; EP group = DP x TP slice of one stage.
    dp = split.local_dp[g.rank]
    ep_rank = dp * split.tp + g.tp_rank if p.deg.ep > 1 else 0
    return dp * (p.deg.pp * split.tp) + g.stage * split.tp + g.tp_rank, ep_rank


def vllm_linear(e: ExpertMap) -> dict[int, tuple[int, ...]]:
    """vLLM's initial physical->logical map (eplb_state.py): [0..E-1] then i mod E for the
    redundant slots, the same for every MoE layer; EP rank r holds a contiguous block."""
    row = tuple(list(range(e.num_experts)) + [i % e.num_experts for i in range(e.redundant)])
    return {layer: row for layer in e.moe_layers}


def rank_loads(slots: tuple[int, ...], ep: int, loads: list[float] | tuple) -> list[float]:
    """Routed load per EP rank: each slot carries its expert's load / number of replicas."""
    copies: dict[int, int] = {}
    for x in slots:
        copies[x] = copies.get(x, 0) + 1
    s = len(slots) // ep
    return [sum(loads[x] / copies[x] for x in slots[r * s:(r + 1) * s]) for r in range(ep)]


def hot_over_mean(slots_by_layer: dict[int, tuple[int, ...]], ep: int, loads) -> dict[int, float]:
    out = {}
    for layer, slots in slots_by_layer.items():
        per_rank = rank_loads(slots, ep, loads[layer])
        mean = sum(per_rank) / ep
        out[layer] = max(per_rank) / mean if mean > 0 else 1.0
    return out


def vllm_serving_args(s: LaunchSettings) -> list[tuple[str, object | None]]:
    """The flags of the plan's workload; vLLM's limits are per engine (one DP rank), the
    plan's per replica. The token budget counts decode tokens too, and vLLM refuses one
    below --max-num-seqs, hence the max. --gpu-memory-utilization is the whole engine's
    share of the GPU: the plan's total for its heaviest GPU."""
    args: list[tuple[str, object | None]] = []
    kv = kv_dtype_flag("vllm", s)
    if kv is not None:
        args.append(("--kv-cache-dtype", kv))
    args += [("--max-num-seqs", s.max_running_requests),
             ("--max-num-batched-tokens", max(s.chunk_tokens, s.max_running_requests)),
             ("--enable-chunked-prefill", None)]
    if s.context_tokens is not None:
        args.append(("--max-model-len", s.context_tokens))
    fraction = s.fraction(s.total_gb)
    if fraction is not None:
        args.append(("--gpu-memory-utilization", fraction))
    return args


def export_vllm(p: PlanData, out_dir: Path, loads=None, serving: LaunchSettings | None = None,
                pd: list[tuple[str, object | None]] | None = None, role: str | None = None) -> Export:
    """``pd``: the prefill/decode flags of one pool replica of a disaggregated plan
    (``export.disagg``), appended after the workload's flags; ``role``: that pool's role
    (prefill, decode), which picks the DeepEP mode (``moe_exchange_args``)."""
    split = split_instances(p, "vllm")
    d, e = p.deg, p.experts
    width = split.moe_world
    if d.ep > 1:
        if d.ep != width or d.etp != 1:
            raise InputError(
                f"vllm: EP = TP x DP: the plan has EP{d.ep} x ETP{d.etp} over attention TP{split.tp} x "
                f"DP{split.dp} = {width} GPUs per instance; vLLM needs ep = {width} and etp = 1")
    elif d.etp != width:
        raise InputError(
            f"vllm: without EP vLLM tensor-slices every expert over all TP x DP = {width} GPUs; "
            f"the plan has ETP{d.etp} x EDP{width // d.etp} per instance")
    if e.redundant and d.ep == 1:
        raise InputError(f"vllm: {e.redundant} redundant experts need EPLB, which vLLM allows only "
                         "with expert parallelism (the plan has ep=1)")
    placed = seats(p, split, _vllm_rule)
    warnings = seat_warnings(p, split, placed, "vllm")
    args: list[tuple[str, object | None]] = [("-tp", split.tp), ("-pp", d.pp), ("-dp", split.dp)]
    if d.ep > 1:
        args.append(("--enable-expert-parallel", None))
        if e.redundant:
            args.append(("--enable-eplb", None))
        args.append(("--eplb-config", q(json.dumps({"num_redundant_experts": e.redundant}))))
    exchange, warnings_exchange = moe_exchange_args("vllm", p, split.tp * split.dp, role)
    args += exchange
    warnings += warnings_exchange
    if serving is not None:
        args += vllm_serving_args(serving)
    args += pd or []
    if split.count > 1:
        args.append(("--port", '"$PORT"'))
    env = {"VLLM_PP_LAYER_PARTITION": stage_partition(p)} if uneven_stages(p) else {}
    rank_world = split.tp * d.pp
    world = rank_world * split.dp
    gpn = p.gpus_per_node
    launches = []
    needs: tuple[str, ...] = ()
    notes = list(p.notes)
    if world > gpn and split.dp > 1 and gpn % rank_world == 0 and split.dp % (gpn // rank_world) == 0:
        local = gpn // rank_world
        common = args + [("--data-parallel-size-local", local),
                         ("--data-parallel-address", '"$HEAD_ADDR"'),
                         ("--data-parallel-rpc-port", 13345)]
        launches.append(Launch(shell_command(["vllm", "serve", '"$MODEL"'], common),
                               '"$NODE_RANK" = 0', "node 0 (head)"))
        launches.append(Launch(shell_command(["vllm", "serve", '"$MODEL"'], common + [
            ("--data-parallel-start-rank", f'"$((NODE_RANK * {local}))"'), ("--headless", None)]),
            None, "other nodes"))
        needs = ("NODE_RANK", "HEAD_ADDR")
        notes.append(f"multi-node DP: {split.dp // local} nodes, {local} DP ranks of TP{split.tp}"
                     f"xPP{d.pp} per node")
    else:
        launches.append(Launch(shell_command(["vllm", "serve", '"$MODEL"'], args)))
        if rank_world > gpn:
            notes.append("one DP rank's TP x PP spans nodes: vLLM runs it on a Ray cluster")
        elif world > gpn:
            notes.append(f"{split.dp} DP ranks of {rank_world} GPUs do not pack evenly onto "
                         f"{gpn}-GPU nodes: write the per-node --data-parallel-size-local / "
                         "--data-parallel-start-rank commands by hand")
    settings = {"tensor_parallel_size": split.tp, "pipeline_parallel_size": d.pp,
                "data_parallel_size": split.dp, "enable_expert_parallel": d.ep > 1,
                "expert_parallel_size": d.ep if d.ep > 1 else 1,
                "num_redundant_experts": e.redundant, "enable_eplb": bool(e.redundant),
                "runtime_version": RUNTIME_VERSIONS["vllm"]}
    settings.update({flag.lstrip("-").replace("-", "_"): value for flag, value in exchange})
    if serving is not None:
        settings.update({flag.lstrip("-").replace("-", "_"): True if value is None else value
                         for flag, value in vllm_serving_args(serving)})
        warnings += [w for w in [serving.memory_warning()] if w]
    else:
        warnings.append(missing_warning("vllm"))
    if split.count > 1:
        notes.append(f"{split.count} separate vLLM deployments (the plan's EDP copies): vLLM's "
                     "-dp would spread the MoE over all DP ranks")
    lost = vllm_loss_text(p, loads) if d.ep > 1 else [
        "expert placement: no EP (experts tensor-sliced over all GPUs), nothing is lost."]
    if d.ep > 1 and not e.is_contiguous():
        warnings.insert(0, "vLLM cannot take an explicit expert map: the plan's placement reverts "
                           f"to vLLM's linear placement ({_loss_short(p, loads)})")
    ex = Export("vllm", {}, launches, env, split.count, world, settings, warnings, notes, needs,
                instance_devices(p, split, placed))
    ex.files["launch.sh"] = launch_sh(ex, f"vLLM launch for plan {p.name}, " + version_line("vllm"))
    body = [version_line("vllm"), "","WHAT vLLM CANNOT TAKE TODAY:",
            "  an explicit expert-to-GPU map. Mainline vLLM accepts only the degrees, the placement",
            "  strategy (linear | round_robin) and a redundant-expert count; the initial map is its",
            "  own and EPLB (--enable-eplb) then moves experts at runtime from measured loads.",
            "  Open, unmerged: PR #34811 (--expert-placement-file, expert_to_ep_rank) and PR #49572",
            "  (eplb_config.initial_expert_map_path, per-layer physical->logical lists).", ""]
    body += lost
    body += ["", "mapping: -tp = attention TP, -dp = attention DP, -pp = PP; EP = TP x DP per stage "
             "(checked); the plan's EDP copies are separate deployments."]
    ex.files["README.txt"] = readme(p, ex, f"vLLM export of {p.name}", body,
                                     rank_map_text(p, split, placed))
    return ex


def _loss_short(p: PlanData, loads) -> str:
    if loads is None:
        lim = p.metrics.get("load_imbalance")
        return (f"plan hot/mean {1 + lim:.3f}; linear unknown without --instance"
                if isinstance(lim, (int, float)) else "loads unknown without --instance")
    e = p.experts
    plan = hot_over_mean(e.slots, e.ep, loads)
    lin = hot_over_mean(vllm_linear(e), e.ep, loads)
    return (f"worst-layer hot/mean: plan {max(plan.values()):.3f}, vLLM linear "
            f"{max(lin.values()):.3f}")


def vllm_loss_text(p: PlanData, loads) -> list[str]:
    e = p.experts
    lines = ["WHAT YOU LOSE: the plan's balanced expert placement. vLLM starts from its linear",
             f"  placement: EP rank r holds physical slots [r*{e.slots_per_rank}, (r+1)*"
             f"{e.slots_per_rank}) of [0..{e.num_experts - 1}"
             + (f", then 0..{e.redundant - 1} mod {e.num_experts}" if e.redundant else "")
             + "], the same in every layer."]
    if e.is_contiguous():
        return ["expert placement: the plan's placement is the contiguous one, which is vLLM's "
                "linear default: nothing is lost."]
    if loads is None:
        lim = p.metrics.get("load_imbalance")
        if isinstance(lim, (int, float)):
            lines.append(f"  the plan's hottest EP rank carries {1 + lim:.3f} x the mean load (worst "
                         "layer, plan metrics); vLLM's linear placement: give --instance to compute it.")
        else:
            lines.append("  expert loads unknown: give --instance to compare hot-rank loads.")
        return lines
    plan = hot_over_mean(e.slots, e.ep, loads)
    lin = hot_over_mean(vllm_linear(e), e.ep, loads)
    wp = max(plan, key=plan.get)
    wl = max(lin, key=lin.get)
    lines += ["  hottest EP rank / mean load (from the instance's expert loads):",
              f"    plan placement : worst layer {wp} {plan[wp]:.3f}, mean over MoE layers "
              f"{sum(plan.values()) / len(plan):.3f}",
              f"    vLLM linear    : worst layer {wl} {lin[wl]:.3f}, mean over MoE layers "
              f"{sum(lin.values()) / len(lin):.3f}",
              "  the MoE step waits for the hottest rank: the worst layer's expert time grows by "
              f"about {max(lin.values()) / max(plan.values()):.2f}x"]
    lines.append("  EPLB (on: the replicas need it) rebalances from measured loads every "
                 "step_interval steps." if e.redundant else
                 "  --enable-eplb would let vLLM rebalance from measured loads at runtime "
                 "(not set: the plan has no redundant experts).")
    return lines

