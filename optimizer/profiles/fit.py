"""Fit a hardware profile from a CSV of measured operator timings (docs/calibration.md §C2).

One row per measurement; the columns (a row fills those of its ``op``):

    op            gemm | grouped_gemm | attention | all_reduce | all_gather | all_to_all
    dtype         bf16 | fp8 | mxfp4            (gemm, grouped_gemm; attention computes in bf16)
    m, n, k       GEMM shape: m tokens, weight n x k                 (gemm)
    tokens_per_expert, hidden, inter, experts_per_gpu
                                       rows per expert, expert shape and experts on the GPU (grouped_gemm)
    kind, phase, sliding, context      mha|gqa|mla, prefill|decode, 0|1; context: prefill the prompt
                                       length, decode the KV tokens the call reads (batch x context)
    flops, hbm_bytes                   the operator's FLOP and HBM bytes (gemm, grouped_gemm, attention)
    peers, link, family, message_bytes collective group size, intra|inter, nccl|custom|deepep_normal|
                                       deepep_ll, bytes per message (per rank received for all_to_all)
    latency_s     the measured time of one call, seconds

eta = speed-of-light time / latency, SOL = max(flops / peak of dtype, hbm_bytes / HBM
bandwidth) with the preset's figures; curves are the medians of eta per half-octave of their x.
Collectives: latency = the smallest message's time, eta(S) = factor * S / (BW * (t - latency)).
"""

from __future__ import annotations

import csv
import datetime
import json
import math
from pathlib import Path

from optimizer.costs.profile import FORMAT_VERSION, Profile
from optimizer.inputs.presets import GPU_PRESETS

COLUMNS = ("op", "dtype", "m", "n", "k", "tokens_per_expert", "hidden", "inter", "experts_per_gpu",
           "kind", "phase",
           "sliding", "context", "flops", "hbm_bytes", "peers", "link", "family", "message_bytes",
           "latency_s")
OPS = ("gemm", "grouped_gemm", "attention", "all_reduce", "all_gather", "all_to_all")
FACTOR = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n,
          "all_to_all": lambda n: 1.0}
ETA_MAX = 1.5


class CsvError(ValueError):
    """A measurement file that cannot be fitted; the message is one line."""


class Sol:
    """Speed-of-light time of an operator on a GPU with ``peaks`` TFLOP/s per dtype."""

    def __init__(self, peaks: dict[str, float], hbm_gb_s: float):
        self.peaks, self.bw = peaks, hbm_gb_s * 1e9

    def __call__(self, flops: float, num_bytes: float, dtype: str) -> float:
        return max(flops / (self.peaks.get(dtype, self.peaks["bf16"]) * 1e12), num_bytes / self.bw)


def curve_of(xs: list[float], etas: list[float]) -> dict:
    return {"x": [float(x) for x in xs], "efficiency": [round(min(max(e, 1e-4), ETA_MAX), 5) for e in etas]}


def median_curve(xs, etas, points: int = 16) -> dict | None:
    """A curve through the medians of eta in half-octave bins of x (at most ``points``)."""
    import statistics
    bins: dict[float, list[float]] = {}
    for x, e in zip(xs, etas):
        if x > 0 and math.isfinite(e) and e > 0:
            bins.setdefault(round(math.log2(x) * 2) / 2, []).append(e)
    keys = sorted(bins)
    if len(keys) > points:
        keys = [keys[round(i * (len(keys) - 1) / (points - 1))] for i in range(points)]
    return curve_of([2 ** k for k in keys], [statistics.median(bins[k]) for k in keys]) if keys else None


def collective_table(op, link, family, peers, sizes, latencies_s, factor, bw_b_s) -> dict | None:
    """A collective table: per-message latency = the smallest time; eta of ``bw_b_s``."""
    alpha = min(latencies_s)
    etas = [min(factor * s / (bw_b_s * max(t - alpha, 1e-12)), ETA_MAX) for s, t in zip(sizes, latencies_s)]
    curve = median_curve(sizes, etas)
    return {"op": op, "link": link, "family": family, "peers": int(peers),
            "latency_us": round(alpha * 1e6, 3), "over_bytes": curve} if curve else None


def _num(row: dict, col: str, line: int) -> float:
    try:
        value = float(row[col])
    except (KeyError, TypeError, ValueError):
        raise CsvError(f"line {line}: column {col}={row.get(col)!r} must be a number for op={row['op']}") from None
    if not math.isfinite(value) or value < 0 or (col == "latency_s" and value <= 0):
        raise CsvError(f"line {line}: column {col}={row[col]!r} must be a finite number > 0")
    return value


def read_measurements(path: Path) -> list[tuple[int, dict]]:
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("op", "latency_s") if c not in (reader.fieldnames or [])]
            if missing:
                raise CsvError(f"{path}: missing column {missing[0]!r} (columns: {', '.join(COLUMNS)})")
            rows = [(i + 2, r) for i, r in enumerate(reader)]
    except OSError as exc:
        raise CsvError(f"{path}: cannot read ({exc.strerror})") from None
    for line, r in rows:
        if r["op"] not in OPS:
            raise CsvError(f"line {line}: op={r['op']!r} must be one of {', '.join(OPS)}")
    if not rows:
        raise CsvError(f"{path}: no measurements")
    return rows


def fit_rows(rows: list[tuple[int, dict]], preset: str, source: str, today: str | None = None) -> Profile:
    """A profile for GPU preset ``preset`` from measurement rows (line, row)."""
    spec = GPU_PRESETS[preset]
    sol = Sol(spec["gpu"]["peak_tflops_by_dtype"], spec["gpu"]["hbm_bandwidth_gb_s"])
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for line, r in rows:
        op, lat = r["op"], _num(r, "latency_s", line)
        if op in ("gemm", "grouped_gemm", "attention"):
            dtype = "bf16" if op == "attention" else r.get("dtype") or "bf16"
            eta = sol(_num(r, "flops", line), _num(r, "hbm_bytes", line), dtype) / lat
            if op == "gemm":
                key, x = (op, dtype, int(_num(r, "n", line)), int(_num(r, "k", line))), _num(r, "m", line)
            elif op == "grouped_gemm":
                key = (op, dtype, int(_num(r, "hidden", line)), int(_num(r, "inter", line)),
                       int(_num(r, "experts_per_gpu", line)))
                x = _num(r, "tokens_per_expert", line)
            else:
                key = (op, r["kind"], str(r.get("sliding", "0")).strip() in ("1", "true", "True"), r["phase"])
                x = _num(r, "context", line)
            groups.setdefault(key, []).append((x, eta))
        else:
            key = (op, r["link"], r.get("family") or "nccl", int(_num(r, "peers", line)))
            groups.setdefault(key, []).append((_num(r, "message_bytes", line), lat))
    doc = {"gemm": [], "grouped_gemm": [], "attention": [], "collectives": []}
    for key, points in sorted(groups.items(), key=lambda kv: str(kv[0])):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if key[0] == "gemm":
            doc["gemm"].append({"dtype": key[1], "n": key[2], "k": key[3], "over_m": median_curve(xs, ys)})
        elif key[0] == "grouped_gemm":
            doc["grouped_gemm"].append({"dtype": key[1], "hidden": key[2], "inter": key[3],
                                        "experts_per_gpu": key[4],
                                        "over_tokens_per_expert": median_curve(xs, ys)})
        elif key[0] == "attention":
            doc["attention"].append({"kind": key[1], "sliding": key[2], "phase": key[3],
                                     "over_context": median_curve(xs, ys)})
        else:
            op, link, family, peers = key
            bw = spec["intra_node_bandwidth_gb_s" if link == "intra" else "inter_node_bandwidth_gb_s"] * 1e9
            doc["collectives"].append(collective_table(op, link, family, peers, xs, ys, FACTOR[op](peers), bw))
    return Profile.model_validate({
        "format_version": FORMAT_VERSION, "name": preset, "gpu": spec["gpu"]["name"],
        "runtime": "as measured", "peak_tflops_by_dtype": spec["gpu"]["peak_tflops_by_dtype"],
        "hbm_bandwidth_gb_s": spec["gpu"]["hbm_bandwidth_gb_s"],
        "provenance": {"source": source, "measured_on": f"{spec['gpu']['name']} (user measurements)",
                       "fitted": today or datetime.date.today().isoformat(),
                       "method": "eta = speed-of-light time / measured time, median per half-octave "
                                 "(docs/calibration.md)"},
        **doc})


def fit_csv(path: Path, preset: str, today: str | None = None) -> Profile:
    return fit_rows(read_measurements(path), preset, f"measurements {Path(path).name}", today)


def profile_json(profile: Profile) -> str:
    """A profile as JSON text: the header indented, one table per line (diffable, compact)."""
    doc = profile.model_dump()
    tables = {k: doc.pop(k) for k in ("gemm", "grouped_gemm", "attention", "collectives")}
    head = json.dumps(doc, indent=1)[:-2]
    parts = [head]
    for key, rows in tables.items():
        body = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in rows)
        parts.append(f',\n "{key}": [\n{body}\n ]' if rows else f',\n "{key}": []')
    return "".join(parts) + "\n}\n"
