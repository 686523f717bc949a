"""Runtime exports carry what the plan's figures assume and request exactly the plan's GPUs.

* GPU count: each generated launch is parsed back from launch.sh and its GPUs counted from the
  runtime's own degree flags (SGLang: tp x pp; vLLM: tp x pp x dp, per node dp-local; TensorRT-LLM:
  tp_size x pp_size, srun tasks); instances x GPUs per instance = the plan's GPUs.
* Settings: a plan written by ``moeopt solve`` (tests/fixtures/runtimes/plans/) exported with its
  instance; every value checked by hand from the instance and the memory the plan file states.
* Schema: every exported flag and YAML key exists in the pinned runtime's parser and its value
  has the declared type and choices (tests/fixtures/runtimes/<runtime>-<version>.json).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from benchmarks import bench_export
from optimizer.cli.common import load_instance
from optimizer.cli.main import main
from optimizer.output.export import RUNTIME_VERSIONS, RUNTIMES, export, plan_from_doc, write_export
from tests.output.test_export import hand_plan, launch_args

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "runtimes"
SOLVED = FIXTURES / "plans" / "deepseek_v3_fp8_h200.plan.json"
DSV3 = REPO / "instances" / "deepseek_v3_fp8_h200.json"
DSV3_SERVICE = REPO / "instances" / "deepseek_v3_fp8_h200_service.json"


def schema(runtime: str) -> dict:
    return json.loads((FIXTURES / f"{runtime}-{RUNTIME_VERSIONS[runtime]}.json").read_text())


def exported(doc: dict, runtime: str, tmp_path: Path, inst=None):
    p = plan_from_doc(doc, inst)
    out = tmp_path / f"{runtime}-{len(list(tmp_path.iterdir()))}"
    ex = export(p, runtime, out, None, inst)
    write_export(ex, out)
    return p, ex, out


def options(argv: list[str], program_words: int) -> dict[str, object]:
    """--flag value pairs after the program words (a flag followed by a flag is a switch)."""
    out: dict[str, object] = {}
    rest = argv[program_words:]
    i = 0
    while i < len(rest):
        name = rest[i]
        assert name.startswith("-"), f"positional {name!r} after the options in {argv}"
        if i + 1 < len(rest) and not rest[i + 1].startswith("-"):
            out[name] = rest[i + 1]
            i += 2
        else:
            out[name] = True
            i += 1
    return out


def program(argv: list[str]) -> tuple[str, int]:
    """(runtime, number of leading words before the options) of one launch command."""
    if argv[:3] == ["python3", "-m", "sglang.launch_server"]:
        return "sglang", 3
    if argv[:2] == ["vllm", "serve"]:
        return "vllm", 3                      # vllm serve MODEL
    if "trtllm-serve" in argv:
        return "trtllm", argv.index("trtllm-serve") + 2
    raise AssertionError(f"unknown launch {argv[:4]}")


def launch_gpus(argv: list[str]) -> int:
    """GPUs one launch command starts, from the runtime's own degree flags."""
    runtime, skip = program(argv)
    opts = options(argv, skip)
    if runtime == "sglang":   # --tp is the TP world of one stage over all nodes
        return int(opts["--tp-size"]) * int(opts.get("--pp-size", 1))
    if runtime == "vllm":     # one command per node with --data-parallel-size-local
        local = opts.get("--data-parallel-size-local", opts["-dp"])
        return int(opts["-tp"]) * int(opts["-pp"]) * int(local)
    gpus = int(opts["--tp_size"]) * int(opts["--pp_size"])
    if argv[0] == "srun":
        tasks = int(argv[argv.index("--ntasks") + 1])
        assert tasks == gpus, (tasks, gpus)
    return gpus


SHAPES = [  # (tp, pp, dp, ep, etp, gpus per node), all in the plan's degree rules
    dict(tp=1, pp=1, dp=8, ep=8),
    dict(tp=1, pp=2, dp=8, ep=8),
    dict(tp=1, pp=1, dp=8, ep=4),            # EDP 2: two instances
    dict(tp=1, pp=1, dp=16, ep=16, gpn=8),   # an instance over two nodes
    dict(tp=1, pp=2, dp=16, ep=16, gpn=8),
    dict(tp=2, pp=1, dp=4, ep=8),            # attention TP2 x DP4 (sglang, not trtllm/vllm EP)
    dict(tp=8, pp=1, dp=1, ep=8),
    dict(tp=4, pp=1, dp=1, ep=1, etp=4),     # experts tensor-sliced
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_launch_requests_exactly_the_plan_gpus(shape, runtime, tmp_path):
    doc = hand_plan(**shape)
    try:
        p, ex, out = exported(doc, runtime, tmp_path)
    except Exception as err:   # a plan the runtime cannot express: exit 2 (tests/output/test_export.py)
        assert type(err).__name__ == "InputError", err
        return
    env, cmds = launch_args(out)
    assert cmds, "no launch command in launch.sh"
    per_launch = {launch_gpus(argv) for argv in cmds}
    assert len(per_launch) == 1, per_launch           # head and headless nodes alike
    gpus = per_launch.pop()
    opts = options(cmds[0], program(cmds[0])[1])
    if runtime == "vllm" and "--data-parallel-size-local" in opts:
        nodes = int(opts["-dp"]) // int(opts["--data-parallel-size-local"])
        gpus *= nodes                                    # one command per node
    assert gpus == ex.gpus_per_instance
    assert ex.instances * gpus == p.deg.num_gpus == doc["num_gpus"]


# ----------------------------------------------------------------------------------------------
# The settings of a solved plan, by hand


def solved_exports(tmp_path: Path):
    inst = load_instance(str(DSV3))
    doc = json.loads(SOLVED.read_text())
    return doc, {rt: exported(doc, rt, tmp_path, inst) for rt in RUNTIMES}


@pytest.mark.slow
def test_solved_plan_settings_by_hand(tmp_path):
    doc, runs = solved_exports(tmp_path)
    # the plan (moeopt solve, DeepSeek-V3 FP8 on 8 H200 of 141 GiB): TP1 DP8 EP8, 2 micro-batches
    # of 4 sequences; batch 64 sequences / DP 8 = 8 per replica; prompts 4000, outputs 1000.
    assert doc["degrees"]["dp"] == 8 and doc["micro_batches"] == 2
    assert doc["sequences_per_micro_batch"] == 4
    worst = max((g["memory_gb"] for g in doc["gpus"]), key=lambda m: m["total"])
    # stated by the plan: weights 98.856 GB, KV 1.405 GB, total 125.981 GB on the worst GPU
    assert worst["weights"] == pytest.approx(98.856, abs=1e-3)
    assert worst["total"] == pytest.approx(125.981, abs=1e-3)
    _, _, out = runs["sglang"]
    _, cmds = launch_args(out)
    o = options(cmds[0], 3)
    # SGLang divides the running cap and the chunk by the DP-attention size: 8*8, 16000*8
    assert o["--max-running-requests"] == "64" and o["--chunked-prefill-size"] == "128000"
    assert o["--context-length"] == "5000" and o["--kv-cache-dtype"] == "fp8_e4m3"
    # the export re-evaluates the plan: the FP8 checkpoint's embedding and head (2 * 926,679,040
    # parameters), final norm 7,168, per MoE layer norms 14,336 + MLA norms 2,048 + router
    # 1,835,264 (x 58) and per dense layer 16,384 (x 3) are bf16: + 1,960,809,984 B, so the
    # weights are 98.856 + 1.961 = 100.817 GB; (100.817 + 1.405) / 151.398 (141 GiB) = 0.6752
    # -> 0.68 (rounded up)
    assert o["--mem-fraction-static"] == "0.68"
    _, _, out = runs["vllm"]
    _, cmds = launch_args(out)
    o = options(cmds[0], 3)
    # per engine (one DP rank): 8 sequences, one micro-batch of 4 x 4000 = 16000 prompt tokens
    assert o["--max-num-seqs"] == "8" and o["--max-num-batched-tokens"] == "16000"
    assert o["--max-model-len"] == "5000" and o["--kv-cache-dtype"] == "fp8"
    assert o["--gpu-memory-utilization"] == "0.85"  # (125.981 + 1.961) / 151.398 = 0.8451 -> 0.85
    _, _, out = runs["trtllm"]
    y = yaml.safe_load((out / "extra_llm_api_options.yaml").read_text())
    assert (y["max_batch_size"], y["max_num_tokens"], y["max_seq_len"]) == (8, 16000, 5000)
    assert y["enable_chunked_prefill"] is True and y["kv_cache_config"]["dtype"] == "fp8"
    # KV 1.405 over what the weights and the step leave: 151.398 - (127.942 - 1.405) = 24.861 GB,
    # 1.405 / 24.861 = 0.0565 -> 0.06
    assert y["kv_cache_config"]["free_gpu_memory_fraction"] == 0.06


def test_every_export_names_its_runtime_version(tmp_path):
    _, runs = solved_exports(tmp_path)
    for runtime, (_, ex, out) in runs.items():
        line = f"written for {runtime} {RUNTIME_VERSIONS[runtime]}"
        assert line in (out / "launch.sh").read_text()
        assert line in (out / "README.txt").read_text()
        assert ex.settings["runtime_version"] == RUNTIME_VERSIONS[runtime]
        assert schema(runtime)["version"] == RUNTIME_VERSIONS[runtime]


def test_without_instance_the_missing_settings_are_a_warning(tmp_path):
    for runtime in RUNTIMES:
        _, ex, out = exported(hand_plan(), runtime, tmp_path)
        assert any(w.startswith("no --instance") for w in ex.warnings)
        assert "--max-running-requests" not in (out / "launch.sh").read_text()


# ----------------------------------------------------------------------------------------------
# A service plan: its serving block


def service_doc() -> dict:
    doc = json.loads(SOLVED.read_text())
    doc["instance"] = "deepseek_v3_fp8_h200_service"
    doc["serving"] = {"max_running_requests": 48, "prefill_chunk_tokens": 8192,
                      "prefill_micro_batches": 1, "decode_micro_batches": 2}
    doc["metrics"] = {"max_memory_gb": 120.5}
    return doc


def test_service_plan_uses_its_serving_block(tmp_path):
    inst = load_instance(str(DSV3_SERVICE))
    doc = service_doc()
    _, _, out = exported(doc, "sglang", tmp_path, inst)
    o = options(launch_args(out)[1][0], 3)
    # 48 x DP 8 = 384 running, 8192 x 8 = 65536 chunk; 120.5 / 151.397597184 (141 GiB) =
    # 0.7959 -> 0.80, rounded up to two decimals
    assert o["--max-running-requests"] == "384" and o["--chunked-prefill-size"] == "65536"
    assert o["--context-length"] == "5000" and o["--mem-fraction-static"] == "0.8"
    _, _, out = exported(doc, "vllm", tmp_path, inst)
    o = options(launch_args(out)[1][0], 3)
    assert o["--max-num-seqs"] == "48" and o["--max-num-batched-tokens"] == "8192"
    assert o["--gpu-memory-utilization"] == "0.8"  # the same 0.7959 rounded up
    _, ex, out = exported(doc, "trtllm", tmp_path, inst)
    y = yaml.safe_load((out / "extra_llm_api_options.yaml").read_text())
    assert (y["max_batch_size"], y["max_num_tokens"]) == (48, 8192)
    assert "free_gpu_memory_fraction" not in y["kv_cache_config"]
    assert any("free_gpu_memory_fraction left" in w for w in ex.warnings)


def test_service_plan_without_serving_block_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = service_doc()
    del doc["serving"]
    Path("p.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["export", "p.json", "--to", "vllm", "--instance",
                                    str(DSV3_SERVICE), "--output", "out"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("moeopt:")]
    assert len(lines) == 1 and "serving" in lines[0]
    assert not Path("out").exists()


# ----------------------------------------------------------------------------------------------
# Every exported flag against the pinned runtime's parser schema


def check_value(spec: dict, value: object, where: str) -> None:
    kind = spec["type"]
    if kind == "switch":
        assert value is True, f"{where}: a switch takes no value, got {value!r}"
        return
    assert value is not True, f"{where}: needs a value"
    if isinstance(value, str) and value.startswith(('"$', '$')):
        return                                   # a shell variable: set at launch time
    if kind == "int":
        value = int(value)
    elif kind == "float":
        value = float(value)
    elif kind == "json":
        value = json.loads(value)
        assert isinstance(value, dict), where
    if "choices" in spec:
        assert value in spec["choices"], f"{where}: {value!r} not in {spec['choices']}"
    if "min" in spec:
        assert value >= spec["min"], where
    if "max" in spec:
        assert value <= spec["max"], where


def check_cli(runtime: str, argv: list[str]) -> None:
    opts = options(argv, program(argv)[1])
    known = schema(runtime)["cli"]["options"]
    for name, value in opts.items():
        assert name in known, f"{runtime} {RUNTIME_VERSIONS[runtime]} has no option {name}"
        check_value(known[name], value, f"{runtime} {name}")


def check_llm_args(fields: dict, doc: dict, where: str) -> None:
    for key, value in doc.items():
        assert key in fields, f"trtllm LLM API has no key {where}{key}"
        spec = fields[key]
        kind = spec["type"]
        if kind == "object":
            assert isinstance(value, dict), where + key
            check_llm_args(spec.get("fields", {}), value, f"{where}{key}.")
        elif kind == "int":
            assert isinstance(value, int) and not isinstance(value, bool), where + key
            assert value >= spec.get("min", value), where + key
        elif kind == "bool":
            assert isinstance(value, bool), where + key
        elif kind == "float":
            assert isinstance(value, float) and spec["min"] <= value <= spec["max"], where + key
        elif kind == "str":
            assert value in spec["choices"], f"{where}{key}={value!r}"
        elif kind == "list[int]":
            assert all(isinstance(x, int) for x in value), where + key
        elif kind == "dict[int,list[int]]":
            assert all(isinstance(k, int) and all(isinstance(x, int) for x in v)
                       for k, v in value.items()), where + key
        else:
            raise AssertionError(f"unknown type {kind} in the fixture")


def schema_cases(tmp_path: Path):
    inst = load_instance(str(DSV3))
    yield json.loads(SOLVED.read_text()), inst
    big = inst.model_copy(update={"hardware": inst.hardware.model_copy(update={"num_gpus": 64})})
    yield bench_export.deepseek_plan(), big              # 32 redundant experts, PP2, 8 nodes
    yield service_doc(), load_instance(str(DSV3_SERVICE))
    for shape in SHAPES:
        yield hand_plan(**shape), None


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.slow
def test_every_exported_flag_is_in_the_runtime_schema(runtime, tmp_path):
    checked = 0
    for doc, inst in schema_cases(tmp_path):
        try:
            _, _, out = exported(doc, runtime, tmp_path, inst)
        except Exception as err:
            assert type(err).__name__ == "InputError", err
            continue
        for argv in launch_args(out)[1]:
            check_cli(runtime, argv)
            checked += 1
        if runtime == "trtllm":
            doc_yaml = yaml.safe_load((out / "extra_llm_api_options.yaml").read_text())
            check_llm_args(schema("trtllm")["llm_args"], doc_yaml, "")
    assert checked >= 6


def test_schema_check_catches_a_wrong_flag():
    """The checker itself: an unknown flag, a bad choice, a switch with a value all fail."""
    with pytest.raises(AssertionError):
        check_cli("vllm", shlex.split('vllm serve "$MODEL" --no-such-flag 1'))
    with pytest.raises(AssertionError):
        check_cli("sglang", shlex.split("python3 -m sglang.launch_server --kv-cache-dtype fp9"))
    with pytest.raises(AssertionError):
        check_llm_args(schema("trtllm")["llm_args"], {"kv_cache_config": {"dtype": "fp9"}}, "")


def test_redundant_experts_add_their_weights_to_the_memory_fraction():
    """DeepSeek-V3 on 64 GPUs, EP32 with 32 redundant experts: 288 slots, 9 per rank where the
    cost model counts 256 // 32 = 8, so one more expert per MoE layer on every GPU.
    One expert: 3 matrices x 7168 x 2048 in FP8 (1 byte) = 44,040,192 bytes. Stage 1 holds
    layers 31..60: 30 MoE layers -> 1,321,205,760 bytes = 1.3212 GB more."""
    from optimizer.output.export.launch_settings import launch_settings, replica_bytes
    inst = load_instance(str(DSV3))
    inst = inst.model_copy(update={"hardware": inst.hardware.model_copy(update={"num_gpus": 64})})
    with_r = plan_from_doc(bench_export.deepseek_plan(redundant=32), inst)
    without = plan_from_doc(bench_export.deepseek_plan(redundant=0), inst)
    assert replica_bytes(with_r, inst, with_r.stages[1]) == 30 * 44_040_192
    assert replica_bytes(without, inst, without.stages[1]) == 0
    a, b = launch_settings(with_r, inst), launch_settings(without, inst)
    # the heaviest GPU gains between 28 (stage 0) and 30 (stage 1) experts' weights
    assert 28 * 0.044040192 - 1e-9 <= a.weights_gb - b.weights_gb <= 30 * 0.044040192 + 1e-9
    assert a.total_gb - a.weights_gb == pytest.approx(b.total_gb - b.weights_gb, abs=0.5)


def test_plan_over_gpu_memory_gets_a_warning_not_a_fraction(tmp_path):
    """The solved plan needs 125.98 GB on its heaviest GPU; on a 100 GB GPU no fraction holds
    it: every runtime leaves its memory fraction out and warns."""
    inst = load_instance(str(DSV3))
    gpu = inst.hardware.gpu.model_copy(update={"memory_gb": 100.0})
    small = inst.model_copy(update={"hardware": inst.hardware.model_copy(update={"gpu": gpu})})
    doc = json.loads(SOLVED.read_text())
    for runtime, flag_name in (("sglang", "--mem-fraction-static"),
                               ("vllm", "--gpu-memory-utilization"),
                               ("trtllm", "free_gpu_memory_fraction")):
        _, ex, out = exported(doc, runtime, tmp_path, small)
        text = "".join(p.read_text() for p in out.iterdir())
        assert flag_name not in text, runtime
        assert any("more than the GPU's 100.00 GB" in w for w in ex.warnings), runtime
