"""Figures of a simulation: exact percentiles over the measured requests (the first
``warmup_fraction`` of them, in arrival order, discarded), SLO attainment and goodput,
a text table and a PNG of latency against arrival time.

Definitions (per measured request, s): TTFT = first token - arrival; E2E = last token -
arrival; TPOT = (last token - first token) / (output tokens - 1), over requests with at
least 2 output tokens. A request meets the SLO when TTFT < max_ttft_s, TPOT <= max_tpot_ms
and E2E <= max_e2e_latency_s (each only if given); a rejected request meets none.
Percentiles are nearest-rank (numpy ``inverted_cdf``): the value of a real request.
goodput_rps = requests meeting the SLO / window, the window running from the first measured
arrival to the last measured completion.
"""

from __future__ import annotations

import numpy as np

from optimizer.inputs.schema import Requirements
from optimizer.simulate.engine import Outcome, PoolStats


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q, method="inverted_cdf")) if len(values) else None


def measured(out: Outcome, warmup_fraction: float) -> np.ndarray:
    """Indices of the measured requests."""
    n = len(out.arrival_ns)
    return np.arange(int(n * warmup_fraction), n)


def latencies_s(out: Outcome, idx: np.ndarray) -> dict[str, np.ndarray]:
    ok = idx[~out.rejected[idx]]
    ttft = (out.first_token_ns[ok] - out.arrival_ns[ok]) / 1e9
    e2e = (out.finish_ns[ok] - out.arrival_ns[ok]) / 1e9
    multi = ok[out.output_tokens[ok] > 1]
    tpot = (out.finish_ns[multi] - out.first_token_ns[multi]) / (out.output_tokens[multi] - 1) / 1e9
    return {"ok": ok, "ttft": ttft, "e2e": e2e, "tpot": tpot, "multi": multi}


def meets_slo(out: Outcome, idx: np.ndarray, req: Requirements) -> np.ndarray:
    """Boolean per measured request (rejected ones False)."""
    good = ~out.rejected[idx]
    ttft = (out.first_token_ns[idx] - out.arrival_ns[idx]) / 1e9
    e2e = (out.finish_ns[idx] - out.arrival_ns[idx]) / 1e9
    steps = np.maximum(out.output_tokens[idx] - 1, 1)
    tpot_ms = (out.finish_ns[idx] - out.first_token_ns[idx]) / steps / 1e6
    if req.max_ttft_s is not None:
        good &= ttft < req.max_ttft_s
    if req.max_tpot_ms is not None:
        good &= (out.output_tokens[idx] < 2) | (tpot_ms <= req.max_tpot_ms)
    if req.max_e2e_latency_s is not None:
        good &= e2e <= req.max_e2e_latency_s
    return good


def load_window_ns(out: Outcome, warmup_fraction: float) -> tuple[int, int]:
    """While the measured requests arrive: from the first measured arrival to the last
    arrival (the drain after it left out); when they all arrive at once, to the last
    completion."""
    idx = measured(out, warmup_fraction)
    ok = idx[~out.rejected[idx]]
    if not len(ok):
        return 0, 0
    start, last = int(out.arrival_ns[idx].min()), int(out.arrival_ns[idx].max())
    return start, last if last > start else int(out.finish_ns[ok].max())


def pool_summary(out: Outcome, stats: PoolStats, warmup_fraction: float, max_running: int) -> dict:
    """One pool's figures over the load window (``load_window_ns``): ``busy_fraction``
    (share of its queues' time running steps), ``mean_running_per_queue`` (time-average of
    the requests in a queue's running step), ``utilization`` (a prefill pool: its busy
    fraction; a decode pool: mean running / ``max_running``), and over the whole run the KV
    peak (most blocks a queue held / its capacity), preemptions and steps."""
    window = load_window_ns(out, warmup_fraction)
    busy, running = stats.busy_fraction(*window), stats.mean_stepping(*window)
    return {"utilization": busy if stats.role == "prefill" else running / max_running,
            "busy_fraction": busy, "mean_running_per_queue": running,
            "peak_kv_fraction": stats.peak_kv_fraction, "preemptions": stats.preemptions,
            "engine_steps": stats.steps}


def summarize(out: Outcome, req: Requirements, warmup_fraction: float) -> dict:
    """The contract's keys (times in s, TPOT in ms) plus a few extras."""
    idx = measured(out, warmup_fraction)
    lat = latencies_s(out, idx)
    good = meets_slo(out, idx, req)
    ok = lat["ok"]
    window_s = ((out.finish_ns[ok].max() - out.arrival_ns[idx].min()) / 1e9) if len(ok) else 0.0
    tpot_ms = lat["tpot"] * 1e3
    return {
        "ttft_p50_s": _pct(lat["ttft"], 50), "ttft_p90_s": _pct(lat["ttft"], 90),
        "ttft_p99_s": _pct(lat["ttft"], 99),
        "tpot_p50_ms": _pct(tpot_ms, 50), "tpot_p90_ms": _pct(tpot_ms, 90),
        "e2e_p90_s": _pct(lat["e2e"], 90),
        "goodput_rps": float(good.sum() / window_s) if window_s > 0 else 0.0,
        "slo_attainment": float(good.mean()) if len(idx) else 0.0,
        "peak_kv_fraction": out.peak_kv_fraction,
        "preemptions": int(out.preemptions),
        "requests": int(len(idx)),
        "throughput_rps": float(len(ok) / window_s) if window_s > 0 else 0.0,
        "output_tokens_per_s": float(out.output_tokens[ok].sum() / window_s) if window_s > 0 else 0.0,
        "rejected": int(out.rejected[idx].sum()),
        "warmup_requests": int(len(out.arrival_ns) - len(idx)),
        "engine_steps": int(out.steps),
    }


def _flat(doc: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested objects as dotted keys (``pools.prefill.utilization``)."""
    rows: list[tuple[str, object]] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append((prefix + key, value))
    return rows


def table(summary: dict, title: str) -> str:
    rows = _flat(summary)
    width = max(len(k) for k, _ in rows)
    lines = [title]
    for key, value in rows:
        shown = "-" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))
        lines.append(f"  {key:<{width}}  {shown}")
    return "\n".join(lines) + "\n"


def plot_png(out: Outcome, warmup_fraction: float, title: str) -> bytes:
    """TTFT and E2E of every finished request against its arrival time (warm-up grey)."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = np.flatnonzero(~out.rejected)
    cut = int(len(out.arrival_ns) * warmup_fraction)
    t = out.arrival_ns[done] / 1e9
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    for values, label, colour in (((out.finish_ns[done] - out.arrival_ns[done]) / 1e9, "E2E", "tab:blue"),
                                  ((out.first_token_ns[done] - out.arrival_ns[done]) / 1e9, "TTFT", "tab:orange")):
        warm = done < cut
        ax.scatter(t[warm], values[warm], s=2, color="0.7")
        ax.scatter(t[~warm], values[~warm], s=2, color=colour, label=label)
    ax.set_xlabel("arrival time (s)")
    ax.set_ylabel("latency (s)")
    ax.set_yscale("log")
    ax.set_title(title + (f" (grey: {cut} warm-up requests)" if cut else ""))
    ax.legend(loc="upper left", markerscale=4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
