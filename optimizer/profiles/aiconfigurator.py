"""Fit a hardware profile from aiconfigurator's measured performance database.

The ``aiconfigurator-core`` PyPI package (Apache-2.0, optional extra ``calibrate``) ships
kernel timings measured on real GPUs inside the runtimes' containers, as parquet tables under
``aiconfigurator_core/systems/data/<system>/<op>/<runtime>/<version>/``. This module reads
the tables moeopt's cost model needs, turns each timing into an achieved fraction of speed
of light with moeopt's own FLOP and byte counts (docs/calibration.md §C2), and returns a
``Profile``. Reading parquet needs pyarrow, which aiconfigurator-core depends on.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import optimizer.costs.formulas as cm
from optimizer.costs.profile import FORMAT_VERSION, Profile
from optimizer.inputs.presets import GPU_PRESETS
from optimizer.profiles.fit import Sol
from optimizer.profiles.fit import collective_table as _collective_table
from optimizer.profiles.fit import median_curve as _median_curve

SYSTEM_OF_PRESET = {"a100-80gb": "a100_sxm", "h100-sxm": "h100_sxm", "h200-sxm": "h200_sxm",
                    "b200": "b200_sxm"}
RUNTIMES = ("trtllm", "sglang", "vllm", "nccl")  # preference order (aiconfigurator's default backend first)
# The public FP8 MoE checkpoints (DeepSeek-V3, Qwen3-*-FP8) are block-scaled: moeopt's "fp8"
# is aiconfigurator's fp8_block (per-tensor fp8 rows are left out).
DTYPES = {"bfloat16": "bf16", "fp8_block": "fp8"}
SHAPES = {1024, 2048, 4096, 7168, 8192, 16384}  # GEMM weight sides kept (n, k)


class AiconfiguratorMissing(RuntimeError):
    """aiconfigurator-core (or pyarrow) is not installed."""


def data_root() -> Path:
    try:
        import aiconfigurator_core  # noqa: F401  (optional extra)
    except ImportError:
        raise AiconfiguratorMissing(
            "aiconfigurator-core is not installed: pip install 'moeopt[calibrate]'") from None
    return Path(aiconfigurator_core.__file__).parent / "systems" / "data"


def _version_key(v: str):
    return tuple(int(p) if p.isdigit() else -1 for p in v.replace("rc", ".").replace("post", ".").split("."))


def find_table(root: Path, system: str, op: str, filename: str,
               runtimes: tuple[str, ...] = RUNTIMES) -> tuple[Path, str] | None:
    """(file, "runtime version") of the preferred runtime's table with the most measurements
    (the largest file of its versions; ties to the newest), or None."""
    for runtime in runtimes:
        base = root / system / op / runtime
        if not base.is_dir():
            continue
        found = [(p / filename) for p in base.iterdir() if (p / filename).is_file()]
        if found:
            best = max(found, key=lambda f: (f.stat().st_size, _version_key(f.parent.name)))
            return best, f"{runtime} {best.parent.name}"
    return None


def find_by_nodes(root: Path, system: str, op: str, filename: str,
                  runtimes: tuple[str, ...] = RUNTIMES) -> list[tuple[Path, str, int]]:
    """For each node count a DeepEP table measures (its ``node_num`` column), the preferred
    runtime's version with the most rows at that count (ties to the newest): a list of
    (file, "runtime version", node count). Inter-node rows exist only in some versions
    (e.g. SGLang 0.5.6.post2 on H100/H200), so single-node and inter-node curves may come
    from different versions; each is named in the provenance."""
    for runtime in runtimes:
        base = root / system / op / runtime
        if not base.is_dir():
            continue
        best: dict[int, tuple[tuple, Path, str]] = {}
        for f in sorted(p / filename for p in base.iterdir() if (p / filename).is_file()):
            counts = _read(f).groupby("node_num").size()
            for nodes, n in counts.items():
                key = (int(n), _version_key(f.parent.name))
                if int(nodes) not in best or key > best[int(nodes)][0]:
                    best[int(nodes)] = (key, f, f"{runtime} {f.parent.name}")
        if best:
            return [(f, label, nodes) for nodes, (_, f, label) in sorted(best.items())]
    return []


def _read(path: Path):
    import pandas as pd
    try:
        return pd.read_parquet(path)
    except ImportError:
        raise AiconfiguratorMissing("reading parquet needs pyarrow (installed with aiconfigurator-core)") from None


def fit_gemm(df, sol) -> list[dict]:
    df = df[df.gemm_dtype.isin(list(DTYPES)) & df.n.isin(SHAPES) & df.k.isin(SHAPES)]
    df = df.groupby(["gemm_dtype", "m", "n", "k"], as_index=False).latency.min()
    out = []
    for (dtype, n, k), g in df.groupby(["gemm_dtype", "n", "k"]):
        d = DTYPES[dtype]
        b = 1 if d == "fp8" else 2
        etas = [sol(2.0 * m * n * k, n * k * b + 2 * m * (n + k), d) / (lat * 1e-3)
                for m, lat in zip(g.m, g.latency)]
        curve = _median_curve(list(g.m), etas)
        if curve and len(g) >= 4:
            out.append({"dtype": d, "n": int(n), "k": int(k), "over_m": curve})
    return out


def fit_grouped(df, sol) -> list[dict]:
    df = df[(df.distribution == "balanced") & df.moe_dtype.isin(list(DTYPES))
            & ~df.kernel_source.str.contains("nongated|marlin")]
    keys = ["moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts",
            "moe_tp_size", "moe_ep_size"]
    df = df.groupby(keys, as_index=False).latency.min()
    df = df.assign(inter_gpu=df.inter_size // df.moe_tp_size, local=df.num_experts // df.moe_ep_size)
    out = []
    for (dtype, h, f, local), g in df.groupby(["moe_dtype", "hidden_size", "inter_gpu", "local"]):
        d = DTYPES[dtype]
        b = 1 if d == "fp8" else 2
        xs, etas = [], []
        for r in g.itertuples():
            rows = r.num_tokens * r.topk
            flops = rows * 2 * 3 * h * f / r.moe_ep_size
            hit = 1 - (1 - r.topk / r.num_experts) ** r.num_tokens
            num_bytes = (r.num_experts / r.moe_ep_size * hit * 3 * h * f * b
                         + rows / r.moe_ep_size * 2 * 2 * (h + f))
            xs.append(rows / r.num_experts)
            etas.append(sol(flops, num_bytes, d) / (r.latency * 1e-3))
        curve = _median_curve(xs, etas)
        if curve:
            out.append({"dtype": d, "hidden": int(h), "inter": int(f), "experts_per_gpu": int(local),
                        "over_tokens_per_expert": curve})
    return out


def _mean_attended(s, w):
    return s / 2 if (not w or w >= s) else w - w * w / (2 * s)


def fit_attention(ctx, gen, sol) -> list[dict]:
    out = []
    for phase, df in (("prefill", ctx), ("decode", gen)):
        if df is None:
            continue
        if "window_size" not in df:
            df = df.assign(window_size=0)
        df = df[(df.attn_dtype == "bfloat16") & (df.kv_cache_dtype == "bfloat16")]
        for kind in ("mha", "gqa"):
            sub = df[(df.num_heads == df.num_key_value_heads) == (kind == "mha")]
            for sliding in (False, True):
                part = sub[(sub.window_size > 0) == sliding]
                xs, etas = [], []
                for r in part.itertuples():
                    n, kv, d, b, w = r.num_heads, r.num_key_value_heads, r.head_dim, r.batch_size, r.window_size
                    if phase == "prefill":
                        s = r.isl
                        flops = b * s * 4 * n * d * _mean_attended(s, w)
                        num_bytes = b * s * (2 * n + 2 * kv) * d * 2
                        x = s
                    else:
                        c = min(r.isl + r.step, w) if w else r.isl + r.step
                        flops = b * 4 * n * d * c
                        num_bytes = b * c * 2 * kv * d * 2
                        x = b * c  # KV tokens the step reads
                    xs.append(x)
                    etas.append(sol(flops, num_bytes, "bf16") / (r.latency * 1e-3))
                curve = _median_curve(xs, etas)
                if curve:
                    out.append({"kind": kind, "sliding": sliding, "phase": phase, "over_context": curve})
    return out


def fit_mla(ctx, gen, sol) -> list[dict]:
    """MLA core with DeepSeek-V3's shapes (d_c 512, d_r 64, d_nope 128, d_v 128)."""
    out = []
    for phase, df in (("prefill", ctx), ("decode", gen)):
        if df is None:
            continue
        df = df[(df.mla_dtype == "bfloat16") & (df.kv_cache_dtype == "bfloat16") & (df.tp_size == 1)]
        df = df.groupby(["num_heads", "batch_size", "isl", "step"], as_index=False).latency.min()
        xs, etas = [], []
        for r in df.itertuples():
            n, b = r.num_heads, r.batch_size
            if phase == "prefill":
                s = r.isl
                flops = b * s * 2 * n * (128 + 64 + 128) * s / 2
                num_bytes = b * s * n * (192 + 192 + 128) * 2
                x = s
            else:
                c = r.isl + r.step
                flops = b * 2 * n * (2 * 512 + 64) * c
                num_bytes = b * c * 576 * 2
                x = b * c  # KV tokens the step reads
            xs.append(x)
            etas.append(sol(flops, num_bytes, "bf16") / (r.latency * 1e-3))
        curve = _median_curve(xs, etas)
        if curve:
            out.append({"kind": "mla", "sliding": False, "phase": phase, "over_context": curve})
    return out


def _deepep_bytes(family: str, tokens: int, hidden: int, experts: int, top_k: int, ep: int,
                  link: str) -> float:
    """Bytes one rank receives over ``link`` in one direction of a DeepEP kernel measured
    with ``tokens`` per rank on ``ep`` ranks (8 per node): the byte model the cost tables
    use (``profiled.a2a_profiled_s``), so eta = these bytes / (link bandwidth x time)."""
    if family == "deepep_normal":
        nvlink, rdma = cm.deepep_normal_bytes(tokens, hidden, 2, experts, top_k, ep, min(ep, 8))
        return nvlink if link == "intra" else rdma
    pairs = tokens * top_k * hidden * 2 / ep  # (token, expert) pairs from each peer
    return pairs * (ep - 1 if link == "intra" else ep - 8)


def fit_collectives(custom, nccl, ll, normal, intra_gb_s, inter_gb_s) -> list[dict]:
    out = []
    intra = intra_gb_s * 1e9
    if custom is not None:
        df = custom[custom.allreduce_dtype == "bfloat16"]
        if "backend" in df:
            df = df[~df.backend.astype(str).str.contains("eager")]
        df = df.groupby(["num_gpus", "message_size"], as_index=False).latency.min()
        for n, g in df.groupby("num_gpus"):
            out.append(_collective_table("all_reduce", "intra", "custom", n, list(g.message_size * 2),
                                         list(g.latency * 1e-3), 2 * (n - 1) / n, intra))
    if nccl is not None:
        for op in ("all_gather", "all_reduce"):
            if custom is not None and op == "all_reduce":
                continue
            df = nccl[(nccl.op_name == op) & (nccl.nccl_dtype == "half")]
            df = df.groupby(["num_gpus", "message_size"], as_index=False).latency.min()
            for n, g in df.groupby("num_gpus"):
                factor = (n - 1) / n * (2 if op == "all_reduce" else 1)
                out.append(_collective_table(op, "intra", "nccl", n, list(g.message_size * 2),
                                             list(g.latency * 1e-3), factor, intra))
    for family, df in (("deepep_ll", ll), ("deepep_normal", normal)):
        if df is None:
            continue
        if family == "deepep_ll":
            df = df.assign(t=(df.dispatch_avg_t_us + df.combine_avg_t_us) / 2 * 1e-6)
        else:
            df = df.assign(t=(df.dispatch_transmit_us + df.dispatch_notify_us + df.combine_transmit_us
                              + df.combine_notify_us) / 2 * 1e-6)
        df = df.groupby(["node_num", "hidden_size", "num_token", "num_topk", "num_experts"], as_index=False).t.min()
        for nodes, g in df.groupby("node_num"):
            ep = 8 * int(nodes)
            link = "intra" if nodes == 1 else "inter"
            sizes = [_deepep_bytes(family, r.num_token, r.hidden_size, r.num_experts, r.num_topk, ep,
                                   link) for r in g.itertuples()]
            table = _collective_table("all_to_all", link, family, ep, sizes, list(g.t), 1.0,
                                      intra if nodes == 1 else inter_gb_s * 1e9)
            out.append(table)
    return [t for t in out if t]


def fit_profile(preset: str, root: Path | None = None, today: str | None = None,
                runtime: str | None = None) -> Profile:
    """The profile of GPU preset ``preset`` fitted from the aiconfigurator database;
    ``runtime`` (trtllm, sglang, vllm) is tried first, then the others in RUNTIMES order."""
    runtimes = ((runtime,) if runtime else ()) + tuple(r for r in RUNTIMES if r != runtime)
    root = root or data_root()
    system = SYSTEM_OF_PRESET[preset]
    spec = GPU_PRESETS[preset]
    sol = Sol(spec["gpu"]["peak_tflops_by_dtype"], spec["gpu"]["hbm_bandwidth_gb_s"])
    used: list[str] = []

    def table(op, filename):
        found = find_table(root, system, op, filename, runtimes)
        if found is None:
            return None
        used.append(f"{op}/{filename} ({found[1]})")
        return _read(found[0])

    def deepep(filename):
        """Every node count's rows, each from the version measuring it most (None if none)."""
        import pandas as pd
        parts = []
        for path, label, nodes in find_by_nodes(root, system, "comm", filename, runtimes):
            df = _read(path)
            parts.append(df[df.node_num == nodes])
            used.append(f"comm/{filename} node_num {nodes} ({label})")
        return pd.concat(parts, ignore_index=True) if parts else None

    def fitted(op, filename, fit):
        """The first runtime (in preference order) whose table ``fit`` turns into tables."""
        for rt in runtimes:
            found = find_table(root, system, op, filename, (rt,))
            if found is not None:
                out = fit(_read(found[0]), sol)
                if out:
                    used.append(f"{op}/{filename} ({found[1]})")
                    return out
        return []

    gemm = fitted("gemm", "gemm_perf.parquet", fit_gemm)
    grouped = fitted("moe", "moe_perf.parquet", fit_grouped)  # balanced routing rows only
    attention = fit_attention(table("attention", "context_attention_perf.parquet"),
                              table("attention", "generation_attention_perf.parquet"), sol)
    attention += fit_mla(table("mla", "context_mla_perf.parquet"),
                         table("mla", "generation_mla_perf.parquet"), sol)
    collectives = fit_collectives(table("comm", "custom_allreduce_perf.parquet"),
                                  table("comm", "nccl_perf.parquet"),
                                  deepep("wideep_deepep_ll_perf.parquet"),
                                  deepep("wideep_deepep_normal_perf.parquet"),
                                  spec["intra_node_bandwidth_gb_s"], spec["inter_node_bandwidth_gb_s"])
    runtimes = sorted({u.rsplit("(", 1)[1].rstrip(")") for u in used})
    return Profile.model_validate({
        "format_version": FORMAT_VERSION, "name": preset, "gpu": spec["gpu"]["name"],
        "runtime": ", ".join(runtimes),
        "provenance": {
            "source": "aiconfigurator-core (PyPI, Apache-2.0) performance database, "
                      f"systems/data/{system}: " + "; ".join(used),
            "measured_on": f"{system} inside the runtimes' containers (aiconfigurator collectors)",
            "fitted": today or datetime.date.today().isoformat(),
            "method": "eta = speed-of-light time (moeopt's FLOP and byte counts, preset peaks) / "
                      "measured time; median per half-octave of the curve's x (docs/calibration.md)",
            "notes": "operators without a table use the instance's flat efficiencies"},
        "peak_tflops_by_dtype": spec["gpu"]["peak_tflops_by_dtype"],
        "hbm_bandwidth_gb_s": spec["gpu"]["hbm_bandwidth_gb_s"],
        "gemm": gemm, "grouped_gemm": grouped,
        "attention": attention, "collectives": collectives})
