"""The real-model instances (instances/README.md, "Real models"): reproducible from
``instances/make_instances.py``, valid, and — where the solver handles decode and mixed
dense/MoE layers — solved the way the known deployments of docs/models.md say.

Solve-level tests are skipped until ``optimizer.cpsat.solve.solve`` handles a small instance with
dense layers and decode (the probe below); then they run.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import pytest

from optimizer.cli.common import load_instance
from optimizer.cli.inspect_model import instance_facts
from optimizer.costs import formulas as cm
from optimizer.errors import InfeasibleError
from optimizer.inputs.schema import Instance

REPO = Path(__file__).resolve().parents[2]
INSTANCES = REPO / "instances"
FIXTURES = REPO / "tests" / "fixtures" / "hf"
NAMES = ["deepseek_v3_fp8_h200", "deepseek_v3_fp8_h100", "mixtral_8x7b_bf16_h100",
         "qwen3_30b_a3b_h200", "deepseek_v2_lite_bf16_a100"]
SOLVE_S = 120.0  # time limit per solve


def make_instances():
    spec = importlib.util.spec_from_file_location("make_instances", INSTANCES / "make_instances.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inst(name: str) -> Instance:
    return load_instance(str(INSTANCES / f"{name}.json"))


# ---------------------------------------------------------------- files
def test_make_instances_reproduces_the_files():
    mk = make_instances()
    assert sorted(mk.INSTANCES) == sorted(NAMES)
    for name in NAMES:
        assert (INSTANCES / f"{name}.json").read_text() == mk.make(name), (
            f"{name}.json is stale: run python instances/make_instances.py")


def test_embedded_configs_are_the_fixtures():
    for key, config in make_instances().CONFIGS.items():
        assert config == json.loads((FIXTURES / f"{key}.json").read_text()), key


@pytest.mark.parametrize("name", NAMES)
def test_instance_is_valid_and_realistic(name):
    i = inst(name)
    assert i.name == name
    wl, req = i.workload, i.requirements
    assert (wl.prompt_tokens, wl.output_tokens) == (4000, 1000) and 32 <= wl.batch_sequences <= 64
    assert req.max_ttft_s is not None and req.max_tpot_ms is not None
    assert name in (INSTANCES / "README.md").read_text()


def test_deepseek_v3_instances_are_fp8():
    for name in ("deepseek_v3_fp8_h200", "deepseek_v3_fp8_h100"):
        m = inst(name).model
        assert (m.weight_dtype, m.kv_dtype, m.attention) == ("fp8", "fp8", "mla")
        assert round(cm.total_params(m) / 1e9, 2) == 671.03


@pytest.mark.parametrize("name, gpus, fits", [
    ("deepseek_v3_fp8_h200", 8, True),
    ("deepseek_v3_fp8_h100", 16, True),
    ("deepseek_v3_fp8_h100", 8, False),
    ("mixtral_8x7b_bf16_h100", 2, True),
    ("mixtral_8x7b_bf16_h100", 1, False),
    ("qwen3_30b_a3b_h200", 1, True),
    ("deepseek_v2_lite_bf16_a100", 1, True),
])
def test_weights_fit_as_the_known_deployments_say(name, gpus, fits):
    """Weights spread over ``gpus`` GPUs against the memory left after the runtime reserve."""
    i = inst(name)
    i = i.model_copy(update={"hardware": i.hardware.model_copy(update={"num_gpus": gpus})})
    assert instance_facts(i)["weights_fit"] is fits


# ---------------------------------------------------------------- solving
@lru_cache(maxsize=1)
def decode_support() -> str | None:
    """None when the solver handles decode and dense layers, else why not (the skip reason)."""
    from optimizer.cpsat.solve import solve

    probe = Instance.model_validate({
        "name": "decode-probe",
        "model": {"num_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "num_kv_heads": 8,
                  "head_dim": 64, "num_experts": 4, "top_k": 2, "expert_ffn_size": 512,
                  "ffn_matrices": 3, "vocab_size": 1000, "moe_layers": [1, 2, 3],
                  "dense_ffn_size": 1024},
        "hardware": {"preset": "h100-sxm", "num_gpus": 2},
        "workload": {"batch_sequences": 4, "prompt_tokens": 64, "output_tokens": 8},
        "requirements": {"max_tpot_ms": 1000.0},
        "search": {"time_limit_s": 10.0},
    })
    try:
        result = solve(probe)
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means: not yet
        text = str(exc).lower()
        if any(word in text for word in ("decode", "output_tokens", "tpot", "dense", "moe_layers")):
            return f"solver does not handle decode / dense layers yet: {exc}"
        return f"decode probe failed: {type(exc).__name__}: {exc}"
    if not any("tpot" in key for key in result.evaluation.metrics()):
        return "solver evaluates no decode step (no tpot metric)"
    return None


needs_decode = pytest.mark.skipif("decode_support() is not None",
                                  reason="needs the solver's decode and mixed dense/MoE support")


def solve_named(name: str, gpus: int | None = None):
    from optimizer.cpsat.solve import solve
    return solve(inst(name), gpus, time_limit_s=SOLVE_S)


def assert_meets_requirements(i: Instance, result):
    metrics = result.evaluation.metrics()
    assert result.status in ("optimal", "feasible")
    assert metrics["max_memory_gb"] <= i.memory_limit_gb
    assert metrics["ttft_s"] < i.requirements.max_ttft_s
    assert metrics["tpot_ms"] <= i.requirements.max_tpot_ms


@needs_decode
def test_deepseek_v3_fp8_on_one_node_of_h200():
    """SGLang --tp 8 / vLLM -dp 8 on 8 x H200: a plan exists."""
    assert_meets_requirements(inst("deepseek_v3_fp8_h200"), solve_named("deepseek_v3_fp8_h200"))


@needs_decode
def test_deepseek_v3_fp8_does_not_fit_one_node_of_h100():
    """SGLang: 8 x H100 is too small for FP8 DeepSeek-V3: exit 3, naming memory."""
    with pytest.raises(InfeasibleError) as err:
        solve_named("deepseek_v3_fp8_h100", 8)
    assert "memory" in err.value.payload.get("conflicts", [])


@needs_decode
def test_deepseek_v3_fp8_on_two_nodes_of_h100():
    """SGLang --tp 16 on 2 x 8 H100: a plan exists on 16 GPUs."""
    result = solve_named("deepseek_v3_fp8_h100", 16)
    assert_meets_requirements(inst("deepseek_v3_fp8_h100"), result)
    assert result.plan.deg.num_gpus == 16


@needs_decode
def test_mixtral_bf16_needs_two_h100():
    """Mistral: ~100 GB in BF16, so 2 x 80 GB; one GPU is infeasible by memory."""
    with pytest.raises(InfeasibleError) as err:
        solve_named("mixtral_8x7b_bf16_h100", 1)
    assert "memory" in err.value.payload.get("conflicts", [])
    assert_meets_requirements(inst("mixtral_8x7b_bf16_h100"), solve_named("mixtral_8x7b_bf16_h100", 2))


@needs_decode
def test_mixtral_bf16_on_one_node():
    assert_meets_requirements(inst("mixtral_8x7b_bf16_h100"), solve_named("mixtral_8x7b_bf16_h100"))


@needs_decode
def test_qwen3_30b_a3b_on_h200():
    i = inst("qwen3_30b_a3b_h200")
    result = solve_named("qwen3_30b_a3b_h200")
    assert_meets_requirements(i, result)
    assert result.evaluation.metrics()["throughput_tokens_per_ms"] >= i.requirements.min_throughput_tokens_per_ms


@needs_decode
def test_deepseek_v2_lite_on_one_a100():
    """DeepSeek-V2-Lite BF16 is served from one GPU."""
    assert_meets_requirements(inst("deepseek_v2_lite_bf16_a100"), solve_named("deepseek_v2_lite_bf16_a100"))
