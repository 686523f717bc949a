"""CLI tests of ``moeopt import-hf``, ``moeopt inspect`` and ``moeopt init`` (docs/interface.md).

Exit codes are asserted exactly; bad input must be one line on stderr naming the field or
option and the value. Every test runs in its own temporary directory.
"""

from __future__ import annotations

import inspect as pyinspect
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from optimizer.cli import main
from optimizer.cli.common import load_instance
from optimizer.cli.inspect_model import DEFAULT_PROMPT_TOKENS, inspect_path
from optimizer.costs import formulas as cm
from optimizer.inputs.schema import Instance, ModelSpec

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "hf"
V3 = FIXTURES / "deepseek_v3.json"
MIXTRAL = FIXTURES / "mixtral_8x7b.json"
INSPECT_KEYS = {"total_params", "active_params", "active_params_no_embedding", "weight_bytes",
                "kv_cache_bytes_per_token", "prefill_flops_per_token", "num_layers", "num_moe_layers",
                "num_experts", "top_k"}


def invoke(*args):
    kw = {"mix_stderr": False} if "mix_stderr" in pyinspect.signature(CliRunner.__init__).parameters else {}
    return CliRunner(**kw).invoke(main, [str(a) for a in args])


def expect(res, code: int):
    assert res.exit_code == code, (f"exit {res.exit_code}\n--- stdout ---\n{res.stdout}\n"
                                   f"--- stderr ---\n{res.stderr}\nexception: {res.exception!r}")
    return res


def one_line_error(res, *needles: str) -> str:
    err = res.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


# ---------------------------------------------------------------- import-hf
def test_import_hf_prints_a_valid_model_section():
    res = expect(invoke("import-hf", V3), 0)
    m = ModelSpec.model_validate(json.loads(res.stdout))
    assert m.name == "deepseek-ai/DeepSeek-V3" and m.attention == "mla"
    assert round(cm.total_params(m) / 1e9, 2) == 671.03


def test_import_hf_output_file_and_overrides(tmp_path):
    out = tmp_path / "sub" / "model.json"
    res = expect(invoke("import-hf", MIXTRAL, "--output", out, "--name", "mixtral",
                        "--weight-dtype", "fp8", "--kv-dtype", "fp8"), 0)
    assert str(out) in res.stdout
    m = ModelSpec.model_validate(json.loads(out.read_text()))
    assert (m.name, m.weight_dtype, m.kv_dtype) == ("mixtral", "fp8", "fp8")
    assert [p.name for p in out.parent.iterdir()] == ["model.json"]  # no temporary left


def test_import_hf_missing_field_exits_2_naming_it(tmp_path):
    c = json.loads(MIXTRAL.read_text())
    del c["num_local_experts"]
    res = expect(invoke("import-hf", write(tmp_path / "config.json", c)), 2)
    one_line_error(res, "num_local_experts", "missing")


def test_import_hf_not_json_exits_2(tmp_path):
    res = expect(invoke("import-hf", write(tmp_path / "config.json", "{not json")), 2)
    one_line_error(res, "invalid JSON")


def test_import_hf_missing_file_exits_2(tmp_path):
    one_line_error(expect(invoke("import-hf", tmp_path / "nope.json"), 2), "no such file")


# ---------------------------------------------------------------- inspect
@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_inspect_hf_config_json_keys(fixture):
    res = expect(invoke("inspect", FIXTURES / fixture, "--format", "json"), 0)
    doc = json.loads(res.stdout)
    assert INSPECT_KEYS <= doc.keys()
    assert doc["source"] == "hf" and doc["prompt_tokens"] == DEFAULT_PROMPT_TOKENS
    assert doc["prompt_tokens_from"] == "default"


def test_inspect_values_are_the_cost_model():
    doc = json.loads(expect(invoke("inspect", V3, "--format", "json"), 0).stdout)
    m = ModelSpec.model_validate(json.loads(expect(invoke("import-hf", V3), 0).stdout))
    assert doc["total_params"] == cm.total_params(m)
    assert doc["active_params"] == cm.active_params(m)
    assert doc["active_params_no_embedding"] == cm.active_params_no_embedding(m)
    assert doc["weight_bytes"] == cm.weight_bytes(m)
    assert doc["kv_cache_bytes_per_token"] == cm.kv_bytes_per_token(m) == 61 * 576 * 2
    assert doc["prefill_flops_per_token"] == cm.prefill_flops_per_token(m, DEFAULT_PROMPT_TOKENS)
    assert (doc["num_layers"], doc["num_moe_layers"], doc["num_experts"], doc["top_k"]) == (61, 58, 256, 8)
    assert doc["not_deployed_params"]["mtp_params"] > 11e9


def test_inspect_prompt_tokens_option():
    doc = json.loads(expect(invoke("inspect", MIXTRAL, "--format", "json", "--prompt-tokens", 1000), 0).stdout)
    assert doc["prompt_tokens"] == 1000 and doc["prompt_tokens_from"] == "--prompt-tokens"


def test_inspect_instance_uses_its_workload_and_gpus(tmp_path):
    out = tmp_path / "i.json"
    expect(invoke("init", "--model", MIXTRAL, "--gpu", "h100-sxm", "--gpus", 1, "--output", out,
                  "--prompt-tokens", 2000, "--output-tokens", 500), 0)
    doc = json.loads(expect(invoke("inspect", out, "--format", "json"), 0).stdout)
    assert INSPECT_KEYS <= doc.keys()
    assert (doc["source"], doc["prompt_tokens"], doc["context_tokens"]) == ("instance", 2000, 2500)
    assert doc["weights_fit"] is False and doc["min_gpus_for_weights"] == 2


def test_inspect_moeopt_model_json(tmp_path):
    model = tmp_path / "model.json"
    expect(invoke("import-hf", MIXTRAL, "--output", model), 0)
    a = json.loads(expect(invoke("inspect", model, "--format", "json"), 0).stdout)
    b = json.loads(expect(invoke("inspect", MIXTRAL, "--format", "json"), 0).stdout)
    assert a["source"] == "model"
    assert {k: a[k] for k in INSPECT_KEYS} == {k: b[k] for k in INSPECT_KEYS}


def test_inspect_shipped_instance():
    doc = json.loads(expect(invoke("inspect", REPO / "instances" / "10b_moe.json", "--format", "json"), 0).stdout)
    assert doc["total_params"] == 9_927_004_160 and doc["prompt_tokens"] == 10240


def test_inspect_table_lists_the_keys():
    out = expect(invoke("inspect", V3), 0).stdout
    for key in INSPECT_KEYS:
        assert key in out
    assert "671.03 B" in out


def test_inspect_bad_model_field_exits_2(tmp_path):
    res = expect(invoke("inspect", write(tmp_path / "m.json", {"model": {"num_layers": 0}}), "--format", "json"), 2)
    one_line_error(res, "model.")


def test_inspect_is_fast():
    """Well under the 1 s budget in-process (the CLI adds ~0.3 s of Python start-up)."""
    start = time.perf_counter()
    for path in (V3, FIXTURES / "llama4_maverick.json", REPO / "instances" / "deepseek_v3_fp8_h100.json"):
        inspect_path(str(path))
    assert (time.perf_counter() - start) / 3 < 0.5


# ---------------------------------------------------------------- init
def init(tmp_path, *extra, model=V3, gpu="h200-sxm", gpus=8, name="out.json"):
    out = tmp_path / name
    return invoke("init", "--model", model, "--gpu", gpu, "--gpus", gpus, "--output", out, *extra), out


def test_init_writes_a_valid_instance_that_round_trips(tmp_path):
    res, out = init(tmp_path, "--batch", 64, "--prompt-tokens", 4000, "--output-tokens", 1000,
                    "--kv-dtype", "fp8", "--max-ttft-s", 10, "--max-tpot-ms", 50,
                    "--min-throughput-tokens-per-ms", 5, "--throughput-scope", "per_gpu")
    expect(res, 0)
    doc = json.loads(out.read_text())
    assert doc["hardware"] == {"preset": "h200-sxm", "num_gpus": 8}
    assert doc["name"] == "out"
    inst = Instance.model_validate(doc)
    assert load_instance(str(out)) == inst
    assert inst.hardware.gpu.memory_gb == 141 * 2**30 / 1e9 and inst.hardware.gpu.peak_tflops == 1978.9  # 141 GiB; FP8 cores
    assert (inst.workload.batch_sequences, inst.workload.prompt_tokens, inst.workload.output_tokens) == (64, 4000, 1000)
    r = inst.requirements
    assert (r.max_ttft_s, r.max_tpot_ms, r.min_throughput_tokens_per_ms, r.throughput_scope) == (10, 50, 5, "per_gpu")
    assert inst.model.kv_dtype == "fp8" and inst.model.weight_dtype == "fp8"
    # the instance is itself a model source: init from it gives the same instance back
    res2, out2 = init(tmp_path, "--batch", 64, "--prompt-tokens", 4000, "--output-tokens", 1000,
                      "--max-ttft-s", 10, "--max-tpot-ms", 50, "--min-throughput-tokens-per-ms", 5,
                      "--throughput-scope", "per_gpu", model=out, name="out2.json")
    expect(res2, 0)
    assert json.loads(out2.read_text()) == {**doc, "name": "out2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out2.json"]


def test_init_from_model_json_equals_init_from_config(tmp_path):
    model = tmp_path / "model.json"
    expect(invoke("import-hf", MIXTRAL, "--output", model), 0)
    expect(init(tmp_path, model=model, gpu="h100-sxm", name="a.json")[0], 0)
    expect(init(tmp_path, model=MIXTRAL, gpu="h100-sxm", name="b.json")[0], 0)
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["model"] == b["model"]


def test_init_weight_dtype_options(tmp_path):
    expect(init(tmp_path, "--weight-dtype", "mxfp4", model=MIXTRAL, gpu="b200", name="m.json")[0], 0)
    inst = load_instance(str(tmp_path / "m.json"))
    assert (inst.model.weight_dtype, inst.model.expert_weight_dtype) == ("bf16", "mxfp4")
    assert inst.hardware.gpu.peak_tflops == 9000.0  # FP4 cores of the B200
    expect(init(tmp_path, "--weight-dtype", "bf16", name="v3.json")[0], 0)
    assert load_instance(str(tmp_path / "v3.json")).model.weight_dtype == "bf16"


def test_init_stdout(tmp_path):
    res = expect(invoke("init", "--model", MIXTRAL, "--gpu", "a100-80gb", "--gpus", 2, "--output", "-"), 0)
    assert Instance.model_validate(json.loads(res.stdout)).hardware.num_gpus == 2


def test_init_says_when_the_weights_cannot_fit(tmp_path):
    res, _ = init(tmp_path, gpu="h100-sxm", gpus=8)
    assert "at least 9 GPUs" in expect(res, 0).stdout


def test_init_bad_preset_exits_2_naming_it(tmp_path):
    res, out = init(tmp_path, gpu="h900-sxm")
    one_line_error(expect(res, 2), "--gpu", "h900-sxm", "h100-sxm")
    assert not out.exists()


def test_init_bad_config_exits_2_naming_the_field(tmp_path):
    c = json.loads(V3.read_text())
    c["qk_rope_head_dim"] = "64"
    res, out = init(tmp_path, model=write(tmp_path / "config.json", c))
    one_line_error(expect(res, 2), "qk_rope_head_dim='64'", "integer")
    assert not out.exists()


def test_init_bad_requirement_exits_2_naming_it(tmp_path):
    res, out = init(tmp_path, "--max-ttft-s", 0)
    one_line_error(expect(res, 2), "requirements.max_ttft_s")
    assert not out.exists()


def test_init_output_is_a_directory_exits_2(tmp_path):
    res = invoke("init", "--model", MIXTRAL, "--gpu", "h100-sxm", "--gpus", 2, "--output", tmp_path)
    one_line_error(expect(res, 2), "--output")


def test_init_missing_required_option_exits_2(tmp_path):
    res = invoke("init", "--model", MIXTRAL, "--gpu", "h100-sxm", "--output", tmp_path / "x.json")
    one_line_error(expect(res, 2), "--gpus")


def test_init_keeps_an_existing_file_on_error(tmp_path):
    out = write(tmp_path / "keep.json", "old")
    res = invoke("init", "--model", MIXTRAL, "--gpu", "nope", "--gpus", 2, "--output", out)
    expect(res, 2)
    assert out.read_text() == "old"


def test_init_writes_a_service_instance(tmp_path):
    # a rate makes the workload a service; the service requirements land in requirements
    res, out = init(tmp_path, "--arrival-rate-rps", 12.5, "--prompt-tokens", 3000, "--output-tokens", 500,
                    "--max-ttft-s", 2, "--max-tpot-ms", 40, "--latency-percentile", 99,
                    "--max-e2e-latency-s", 30, "--min-goodput-rps", 5)
    expect(res, 0)
    inst = load_instance(str(out))
    wl, r = inst.workload, inst.requirements
    assert (wl.kind, wl.arrival_rate_rps, wl.prompt_tokens, wl.output_tokens) == ("service", 12.5, 3000, 500)
    assert (r.max_ttft_s, r.max_tpot_ms, r.latency_percentile, r.max_e2e_latency_s, r.min_goodput_rps) == \
        (2, 40, 99, 30, 5)
    res, out = init(tmp_path, "--concurrency", 16, "--output-tokens", 100, name="closed.json")
    expect(res, 0)
    assert load_instance(str(out)).workload.concurrency == 16


def test_init_service_bad_rate_exits_2(tmp_path):
    res, out = init(tmp_path, "--arrival-rate-rps", -1, "--output-tokens", 100, name="bad.json")
    expect(res, 2)
    assert "arrival_rate_rps" in res.output and not out.exists()
