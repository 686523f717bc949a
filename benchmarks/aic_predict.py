"""aiconfigurator's own predictions for a list of configurations (run by bench_fidelity.py in
the Python that has ``aiconfigurator-core`` installed; it imports nothing from moeopt).

stdin: a JSON list of {"model", "system", "tp", "pp", "dp", "ep", "batch_per_dp", "isl",
"osl", "hidden", "top_k", "experts", "moe_layers"} (the last four: the model's MoE shape, for
the DeepEP lookup); stdout: a JSON list of {"default": FIGURES, "aligned": FIGURES, "error"} in the same
order, FIGURES = {"ttft_ms", "tpot_ms", "memory_gb", "prefill_ms": {group: ms},
"decode_ms": {group: ms per step}, "comm": how the MoE communication was priced}.

The estimator is aiconfigurator's static mode (``run_static_per_op``) on its measured
(SILICON) database with the trtllm backend, KV cache and attention in bf16.

- ``default``: aiconfigurator as it ships: routed tokens follow its power-law distribution,
  and on Hopper with attention DP its TensorRT-LLM path moves the MoE tokens with an NCCL
  all-gather before the experts and a reduce-scatter after them (every rank receives every
  DP rank's hidden states).
- ``aligned``: the same estimator with the two differences to moeopt's definitions removed:
  balanced routing (moeopt's uniform loads), and the MoE dispatch/combine priced as the
  DeepEP all-to-all moeopt models, from the same database's DeepEP timings (SGLang tables,
  normal kernels for prefill, low-latency kernels for decode; the fastest SM setting;
  log-log interpolation in tokens per rank) where they measure the model's shape (hidden,
  top-k, experts) at the configuration's node count. Where they do not, the all-gather
  figure stays and ``comm`` says so. A phase whose MoE communication is fused into an
  overlap op (DeepSeek decode) keeps it as it is.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

GROUPS = (("dispatch", "moe_comm"), ("moe_overlap", "moe+comm"), ("norm", "elementwise"),
          ("act", "elementwise"), ("attention", "attention"), ("mla", "attention"), ("logits", "lm_head"),
          ("embedding", "embedding"), ("gemm", "linear"))


def group(name: str) -> str:
    """aiconfigurator op name -> the operator group moeopt's breakdown uses."""
    op = name.split("_", 1)[1]
    if op == "moe":
        return "routed_experts"
    return next((g for key, g in GROUPS if key in op), op)


def compile_handle(cfg: dict, distribution: str):
    """EngineHandle.compile with the routing distribution set (the SDK's compile path)."""
    import aiconfigurator_core
    from aiconfigurator_core.sdk import engine
    from aiconfigurator_core.sdk.config_builders import build_model_config
    from aiconfigurator_core.sdk.models import get_model

    config = build_model_config(tp_size=cfg["tp"], pp_size=cfg["pp"], attention_dp_size=cfg["dp"],
                                moe_tp_size=1, moe_ep_size=cfg["ep"], kvcache_quant_mode="bfloat16",
                                fmha_quant_mode="bfloat16")
    config.workload_distribution = distribution
    model = get_model(cfg["model"], config, "trtllm")
    version = engine._literal_backend_version(cfg["system"], "trtllm", None, None, None)
    database = engine._maybe_load_database(cfg["system"], "trtllm", version, None)
    spec = engine.build_engine_spec_json(model, model_path=cfg["model"], system=cfg["system"], backend="trtllm",
                                         backend_version=version, kv_block_size=None, systems_path=None,
                                         nextn=0, database=database)
    return engine.EngineHandle(bytes(aiconfigurator_core.engine_spec_bincode_from_json(spec))), model, database


def deepep_ms(system: str, family: str, nodes: int, hidden: int, topk: int, experts: int,
              tokens: float) -> float | None:
    """Measured DeepEP dispatch + combine time (ms) of ``tokens`` per rank, or None when no
    SGLang table of this system measures the shape at this node count."""
    import aiconfigurator_core
    import pandas as pd

    root = Path(aiconfigurator_core.__file__).parent / "systems" / "data" / system / "comm" / "sglang"
    name = "wideep_deepep_normal_perf.parquet" if family == "normal" else "wideep_deepep_ll_perf.parquet"
    parts = [pd.read_parquet(f) for f in sorted(root.glob(f"*/{name}"))]
    if not parts:
        return None
    df = pd.concat(parts, ignore_index=True)
    df = df[(df.node_num == nodes) & (df.hidden_size == hidden) & (df.num_topk == topk) & (df.num_experts == experts)]
    if df.empty:
        return None
    if family == "normal":
        t = df.dispatch_transmit_us + df.dispatch_notify_us + df.combine_transmit_us + df.combine_notify_us
    else:
        t = df.dispatch_avg_t_us + df.combine_avg_t_us
    curve = df.assign(t=t).groupby("num_token").t.min()
    xs, ys = list(curve.index), list(curve.values)
    if tokens <= xs[0] or len(xs) == 1:
        return ys[0] * 1e-3
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if tokens <= x1:
            w = math.log(tokens / x0) / math.log(x1 / x0)
            return math.exp(math.log(y0) + w * (math.log(y1) - math.log(y0))) * 1e-3
    return ys[-1] * tokens / xs[-1] * 1e-3  # past the table: linear in bytes


def _evaluate(handle, ops, tokens: int) -> float:
    """One decode step of ``ops`` (each scaled by its layer count) at ``tokens`` tokens per
    rank, ms (MoE and communication ops do not depend on the context)."""
    from aiconfigurator_core.sdk.engine import build_ops_json

    return sum(v[1] for v in handle.evaluate_ops_json(build_ops_json(ops), is_context=False,
                                                      batch_size=tokens, s=1, x=tokens))


def align_moe_comm(cfg: dict, handle, model, prefill: dict, decode: dict) -> str | None:
    """Re-price the MoE dispatch/combine of both phases with the measured DeepEP kernels
    (in place, ms); the text says what was replaced, None if nothing was."""
    if cfg["ep"] < 8 or cfg["ep"] % 8:
        return None
    shape = (cfg["system"], cfg["ep"] // 8, cfg["hidden"], cfg["top_k"], cfg["experts"])
    layers, done = cfg["moe_layers"], []
    normal = deepep_ms(shape[0], "normal", *shape[1:], cfg["batch_per_dp"] * cfg["isl"] / cfg["tp"])
    if normal is not None and "moe_comm" in prefill:
        prefill["moe_comm"] = normal * layers
        done.append("prefill DeepEP normal")
    tokens = cfg["batch_per_dp"] // cfg["tp"]
    ll = deepep_ms(shape[0], "ll", *shape[1:], tokens)
    if ll is not None and "moe_comm" in decode:
        decode["moe_comm"] = ll * layers
        done.append("decode DeepEP low-latency")
    overlap = [op for op in model.generation_ops if type(op).__name__ == "OverlapOp"]
    if ll is not None and "moe+comm" in decode and len(overlap) == 1:
        # DeepSeek decode: max(routed experts with their dispatch, shared expert) per layer
        routed = [op for op in overlap[0]._group_a if "dispatch" not in op._name]
        experts = _evaluate(handle, routed, tokens)  # the ops carry the layer count
        shared = _evaluate(handle, list(overlap[0]._group_b), tokens)
        del decode["moe+comm"]
        if experts + ll * layers >= shared:
            decode["routed_experts"], decode["moe_comm"] = experts, ll * layers
        else:
            decode["linear"] = decode.get("linear", 0.0) + shared
        done.append("decode DeepEP low-latency (overlap op rebuilt)")
    return ", ".join(done) + " measured" if done else "no DeepEP measurement of this shape: all-gather kept"


def figures(cfg: dict, distribution: str, align_comm: bool) -> dict:
    from aiconfigurator_core.sdk.backends.factory import get_backend

    handle, model, database = compile_handle(cfg, distribution)
    ctx, gen = handle.run_static_per_op(batch_size=cfg["batch_per_dp"], isl=cfg["isl"], osl=cfg["osl"])
    steps = cfg["osl"] - 1
    prefill, decode = {}, {}
    for name, ms, *_ in ctx:
        prefill[group(name)] = prefill.get(group(name), 0.0) + ms
    for name, ms, *_ in gen:
        decode[group(name)] = decode.get(group(name), 0.0) + ms / steps
    comm = "as aiconfigurator prices it"
    if align_comm:
        comm = align_moe_comm(cfg, handle, model, prefill, decode) or comm
    memory = get_backend("trtllm")._get_memory_usage(model, database, cfg["batch_per_dp"], 1, cfg["isl"], cfg["osl"])
    return {"ttft_ms": sum(prefill.values()), "tpot_ms": sum(decode.values()),
            "memory_gb": memory["total"] * (1 << 30) / 1e9,  # it reports GiB
            "prefill_ms": prefill, "decode_ms": decode, "comm": comm}


def main() -> int:
    out = []
    for cfg in json.load(sys.stdin):
        try:
            out.append({"default": figures(cfg, "power_law", False),
                        "aligned": figures(cfg, "balanced", True), "error": None})
        except Exception as exc:  # one configuration the estimator cannot evaluate
            out.append({"default": None, "aligned": None, "error": f"{type(exc).__name__}: {exc}"[:300]})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
