"""aiconfigurator's own predictions for a list of configurations (run by bench_fidelity.py in
the Python that has ``aiconfigurator-core`` installed; it imports nothing from moeopt).

stdin: a JSON list of {"model", "system", "tp", "pp", "dp", "ep", "batch_per_dp", "isl",
"osl"}; stdout: a JSON list of {"ttft_ms", "tpot_ms", "memory_gb", "error"} in the same
order. The estimator is aiconfigurator's static mode (``EngineHandle.run_static``) on its
measured (SILICON) database with the trtllm backend, KV cache and attention in bf16.
"""

from __future__ import annotations

import json
import sys


def predict(cfg: dict) -> dict:
    from aiconfigurator_core.sdk.backends.factory import get_backend
    from aiconfigurator_core.sdk.config_builders import build_model_config
    from aiconfigurator_core.sdk.engine import EngineHandle, _literal_backend_version
    from aiconfigurator_core.sdk.models import get_model
    from aiconfigurator_core.sdk.perf_database import get_database

    par = dict(tp_size=cfg["tp"], pp_size=cfg["pp"], attention_dp_size=cfg["dp"], moe_tp_size=1,
               moe_ep_size=cfg["ep"])
    quant = dict(kvcache_quant_mode="bfloat16", fmha_quant_mode="bfloat16")
    handle = EngineHandle.compile(cfg["model"], cfg["system"], "trtllm", **par, **quant)
    context_ms, generation_ms, _ = handle.run_static(batch_size=cfg["batch_per_dp"], isl=cfg["isl"],
                                                     osl=cfg["osl"])
    model_config = build_model_config(**par, gemm_quant_mode=None, moe_quant_mode=None,
                                      comm_quant_mode=None, forward_model=None, attention_backend=None,
                                      **quant)
    model = get_model(cfg["model"], model_config, "trtllm")
    version = _literal_backend_version(cfg["system"], "trtllm", None, None, None)
    database = get_database(cfg["system"], "trtllm", version)
    memory = get_backend("trtllm")._get_memory_usage(model, database, cfg["batch_per_dp"], 1,
                                                     cfg["isl"], cfg["osl"])
    return {"ttft_ms": context_ms, "tpot_ms": generation_ms / (cfg["osl"] - 1),
            "memory_gb": memory["total"] * (1 << 30) / 1e9, "error": None}  # it reports GiB


def main() -> int:
    out = []
    for cfg in json.load(sys.stdin):
        try:
            out.append(predict(cfg))
        except Exception as exc:  # one configuration the estimator cannot evaluate
            out.append({"ttft_ms": None, "tpot_ms": None, "memory_gb": None,
                        "error": f"{type(exc).__name__}: {exc}"[:300]})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
