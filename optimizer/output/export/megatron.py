"""Megatron-Core: parallelism and pipeline-split flags and a ``torchrun`` launch."""

from __future__ import annotations

from pathlib import Path

from optimizer.costs.layout import GpuSlot
from optimizer.errors import InputError
from optimizer.output.export.common import (
    Export,
    Launch,
    Split,
    launch_sh,
    node_count,
    node_fill_notes,
    q,
    rank_map_text,
    readme,
    seat_warnings,
    seats,
    shell_command,
)
from optimizer.plan.files import PlanData

# ----------------------------------------------------------------------------------------------
# Megatron-Core


def megatron_pipeline_args(stages: tuple[tuple[int, ...], ...]) -> list[tuple[str, object]]:
    """Flags for the plan's layer split: none when even, first/last counts when the middle is
    even, else the --pipeline-model-parallel-layout string (E first, L last, t = layer)."""
    sizes = [len(s) for s in stages]
    pp = len(sizes)
    if pp == 1 or len(set(sizes)) == 1:
        return []
    if len(set(sizes[1:])) == 1:
        return [("--decoder-first-pipeline-num-layers", sizes[0])]
    if len(set(sizes[:-1])) == 1:
        return [("--decoder-last-pipeline-num-layers", sizes[-1])]
    if pp >= 3 and len(set(sizes[1:-1])) == 1:
        return [("--decoder-first-pipeline-num-layers", sizes[0]),
                ("--decoder-last-pipeline-num-layers", sizes[-1])]
    parts = []
    for j, n in enumerate(sizes):
        part = ("E" if j == 0 else "") + (f"t*{n}" if n > 1 else "t") + ("L" if j == pp - 1 else "")
        parts.append(part)
    return [("--pipeline-model-parallel-layout", q("|".join(parts)))]


def _megatron_rule(g: GpuSlot, split: Split, p: PlanData) -> tuple[int, int]:
    d = p.deg
    in_stage = g.tp_rank + d.tp * g.dp_rank
    return in_stage + d.tp * d.dp * g.stage, (in_stage // d.etp) % d.ep


def export_megatron(p: PlanData, out_dir: Path) -> Export:
    d, e = p.deg, p.experts
    world = d.num_gpus
    if world % (d.tp * d.pp):
        raise InputError(f"megatron: world={world} not divisible by TP*PP={d.tp * d.pp}")
    if world % (d.etp * d.ep * d.pp):
        raise InputError(f"megatron: world={world} not divisible by ETP*EP*PP={d.etp * d.ep * d.pp}")
    if e.num_experts % d.ep:
        raise InputError(f"megatron: --num-experts {e.num_experts} is not divisible by "
                         f"--expert-model-parallel-size {d.ep}")
    split = Split(1, d.tp, d.dp, {g.rank: 0 for g in p.gpus}, {g.rank: g.dp_rank for g in p.gpus})
    placed = seats(p, split, _megatron_rule)
    warnings = seat_warnings(p, split, placed, "megatron")
    if e.redundant:
        warnings.append(f"Megatron-Core has no redundant experts: the plan's {e.redundant} "
                        f"replica slots are dropped, each EP rank holds {e.num_experts // d.ep} "
                        "experts")
    if not e.is_contiguous():
        warnings.append(f"the plan's expert placement is not Megatron's contiguous one (EP rank r "
                        f"owns experts [r*{e.num_experts // d.ep}, (r+1)*{e.num_experts // d.ep})): "
                        "Megatron will use contiguous blocks and lose the plan's balance")
    args: list[tuple[str, object | None]] = [
        ("--tensor-model-parallel-size", d.tp), ("--pipeline-model-parallel-size", d.pp),
        ("--expert-model-parallel-size", d.ep), ("--expert-tensor-parallel-size", d.etp),
        ("--num-layers", e.num_layers), ("--num-experts", e.num_experts)]
    if d.tp > 1:
        args.append(("--sequence-parallel", None))
    if e.dense_layers:
        pattern = [0 if layer in set(e.dense_layers) else 1 for layer in range(e.num_layers)]
        args.append(("--moe-layer-freq", q(_run_pattern(pattern))))
    args += megatron_pipeline_args(p.stages)
    gpn = p.gpus_per_node
    nnodes = node_count(world, gpn)
    prog = ["torchrun", f"--nproc-per-node {min(world, gpn)}", f"--nnodes {nnodes}"]
    needs: tuple[str, ...] = ()
    if nnodes > 1:
        prog += ['--node-rank "$NODE_RANK"', '--master-addr "$HEAD_ADDR"', "--master-port 6000"]
        needs = ("NODE_RANK", "HEAD_ADDR")
    prog += ['"${MEGATRON_SCRIPT:-pretrain_gpt.py}"']
    args_text = "\n".join(f if v is None else f"{f} {v}" for f, v in args) + "\n"
    settings = {"tensor_model_parallel_size": d.tp, "pipeline_model_parallel_size": d.pp,
                "data_parallel_size": world // (d.tp * d.pp), "expert_model_parallel_size": d.ep,
                "expert_tensor_parallel_size": d.etp,
                "expert_data_parallel_size": world // (d.etp * d.ep * d.pp), "world_size": world}
    cmd = shell_command(prog, [(f, v) for f, v in args] + [('"$@"', None)])
    notes = list(p.notes) + node_fill_notes(world, gpn)
    notes.append("add your model, data and training flags; the parallel flags are in "
                 "megatron_args.txt")
    ex = Export("megatron", {}, [Launch(cmd)], {}, 1, world, settings, warnings, notes, needs)
    ex.files["megatron_args.txt"] = args_text
    ex.files["launch.sh"] = launch_sh(ex, f"Megatron-Core launch for plan {p.name}")
    body = ["files:", "  megatron_args.txt  the parallelism and pipeline-split flags, one per line",
            "", "mapping: DP = world/(TP*PP); EDP = world/(ETP*EP*PP) (MoE parallel folding); rank "
            "order tp-cp-ep-dp-pp (the plan's layout); experts contiguous per EP rank."]
    ex.files["README.txt"] = readme(p, ex, f"Megatron-Core export of {p.name}", body,
                                     rank_map_text(p, split, placed))
    return ex


def _run_pattern(pattern: list[int]) -> str:
    runs: list[tuple[int, int]] = []
    for x in pattern:
        if runs and runs[-1][0] == x:
            runs[-1] = (x, runs[-1][1] + 1)
        else:
            runs.append((x, 1))
    return "(" + "+".join(f"[{x}]*{n}" for x, n in runs) + ")"

