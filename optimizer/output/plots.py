"""Pictures of tables (matplotlib, Agg backend): returned as PNG bytes."""

from __future__ import annotations

import io

import pandas as pd


def pareto_png(table: pd.DataFrame) -> bytes:
    """Throughput per GPU against TTFT, one colour per GPU count; the front (``pareto``
    rows) joined by a line, deployments that miss a requirement drawn as crosses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    colours = plt.get_cmap("tab10")
    for i, (gpus, group) in enumerate(sorted(table.groupby("num_gpus"), key=lambda kv: kv[0])):
        colour = colours(i % 10)
        ok, bad = group[group["feasible"].astype(bool)], group[~group["feasible"].astype(bool)]
        ax.scatter(ok["ttft_s"], ok["throughput_tokens_per_ms_per_gpu"], color=colour, s=28,
                   label=f"{gpus} GPUs")
        ax.scatter(bad["ttft_s"], bad["throughput_tokens_per_ms_per_gpu"], color=colour, s=36,
                   marker="x", label=f"{gpus} GPUs, misses a requirement" if len(bad) else None)
    front = table[table["pareto"].astype(bool)].sort_values("ttft_s")
    if len(front):
        ax.plot(front["ttft_s"], front["throughput_tokens_per_ms_per_gpu"], color="black",
                linewidth=1, linestyle="--", label="Pareto front (all counts)")
    ax.set_xlabel("TTFT of the batch (s)")
    ax.set_ylabel("throughput per GPU (tokens/ms)")
    ax.set_title("Deployments by GPU count")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # an empty table has nothing to label (and matplotlib warns)
        ax.legend(fontsize=7, loc="best")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
