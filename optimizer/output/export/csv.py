"""CSV: one row per GPU (placement, group ranks, layers, experts per layer, stated memory)."""

from __future__ import annotations

from pathlib import Path

from optimizer.output.export.common import Export, ranges, unranges
from optimizer.plan.files import PlanData

# ----------------------------------------------------------------------------------------------
# CSV

CSV_COLUMNS = ("rank", "node", "local_gpu", "stage", "layers", "tp_rank", "dp_rank", "ep_rank",
               "etp_rank", "edp_rank", "experts_per_layer", "memory_gb_weights",
               "memory_gb_kv_cache", "memory_gb_activations", "memory_gb_buffers",
               "memory_gb_total")


def experts_compact(per_layer: dict[int, tuple[int, ...]]) -> str:
    """'L0-7:0-3,9; L8:1,2' -- runs of layers with the same slots, slots as ranges."""
    groups: list[tuple[list[int], tuple[int, ...]]] = []
    for layer in sorted(per_layer):
        slots = per_layer[layer]
        if groups and groups[-1][1] == slots and groups[-1][0][-1] == layer - 1:
            groups[-1][0].append(layer)
        else:
            groups.append(([layer], slots))
    return "; ".join(f"L{ranges(layers)}:{ranges(list(slots))}" for layers, slots in groups)


def parse_compact(text: str) -> dict[int, list[int]]:
    """Inverse of ``experts_compact``."""
    out: dict[int, list[int]] = {}
    for group in filter(None, (g.strip() for g in text.split(";"))):
        layers, slots = group[1:].split(":")
        ids = unranges(slots)
        for layer in unranges(layers):
            out[layer] = ids
    return out


def export_csv(p: PlanData, out_dir: Path) -> Export:
    rows = [",".join(CSV_COLUMNS)]
    for g in p.gpus:
        mem = p.memory.get(g.rank, {})
        layers = p.stages[g.stage]
        cells = [g.rank, g.node, g.local_rank, g.stage, ranges(list(layers)), g.tp_rank,
                 g.dp_rank, g.ep_rank, g.etp_rank, g.edp_rank,
                 '"' + experts_compact(p.gpu_experts(g)) + '"']
        cells += [_num(mem.get(k)) for k in ("weights", "kv_cache", "activations", "buffers", "total")]
        rows.append(",".join(str(c) for c in cells))
    ex = Export("csv", {"gpus.csv": "\n".join(rows) + "\n"}, [], {}, 1, len(p.gpus), {}, [],
                list(p.notes))
    return ex


def _num(x: object) -> str:
    return "" if not isinstance(x, (int, float)) else f"{x:.3f}"

