"""Readable lines of an evaluation (checks, memory per stage, metrics): shared by ``moeopt
check`` (``plan.check``) and the printed plan (``output.text``), so the plan package renders its
own verdicts without importing the output package."""

from __future__ import annotations

from optimizer.costs.units import bytes_to_gb
from optimizer.plan.evaluate import RELATION, Check, Evaluation


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
