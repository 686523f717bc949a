"""Exported expert maps loaded by the runtime's OWN code (SGLang, vLLM), on the CPU.

SGLang: every exported ``sglang.launch_server`` command goes through SGLang's parser, its
``ServerArgs`` resolution and ``compute_initial_expert_location_metadata``, which reads our
``--init-expert-location`` file as a server does at start; the map SGLang builds must be the
plan's, slot for slot, and its replica lists (``logical_to_all_physical_map``) the slots that
hold each expert in the plan. vLLM takes no explicit map: its own start map and per-rank slots
must be what ``export.vllm_linear`` and the contiguous-block rule say (the README's hot-rank
comparison rests on them). Runs in the throwaway environment of ``.ci/runtime-parsers``
(``MOEOPT_RUNTIME_PYTHON``); skipped without it, with the reason.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import bench_export
from optimizer.cli.common import load_instance
from optimizer.output.export import plan_from_doc, vllm_linear
from tests.output.test_export import hand_plan
from tests.output.test_export_disagg import CASES, INSTANCES, exported, qwen_doc, qwen_instance
from tests.output.test_runtime_launch import DSV3, SOLVED
from tests.output.test_runtime_launch import exported as exported_agg
from tests.output.test_runtime_parsers import concrete, runtime_python

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tests" / "tools" / "expert_location_loader.py"

DEEPSEEK_V3 = {  # config.json of DeepSeek-V3 as far as SGLang's expert location reads it
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "num_hidden_layers": 61, "n_routed_experts": 256, "first_k_dense_replace": 3,
    "moe_layer_freq": 1, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_attention_heads": 128, "num_key_value_heads": 128, "kv_lora_rank": 512,
    "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "n_shared_experts": 1, "vocab_size": 129280, "max_position_embeddings": 163840,
    "torch_dtype": "bfloat16"}


def qwen3_moe(layers: int, experts: int) -> dict:
    return {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
            "num_hidden_layers": layers, "num_experts": experts, "num_experts_per_tok": 2,
            "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
            "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
            "vocab_size": 151936, "max_position_embeddings": 40960, "decoder_sparse_step": 1,
            "mlp_only_layers": [], "torch_dtype": "bfloat16"}


def sglang_commands(out: Path) -> list[list[str]]:
    """Every sglang.launch_server argv of an export (aggregated or disaggregated), after its
    program words, shell variables given values."""
    text = (out / "launch.sh").read_text().replace("\\\n", " ")
    argvs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("python3 -m sglang.launch_server"):
            import shlex
            words = concrete(shlex.split(line), out)
            for var, value in (("$BOOTSTRAP_PORT", "8998"), ("$ENGINE_INFO_PORT", "6789")):
                words = [w.replace(var, value) for w in words]
            argvs.append(words[3:])
    return argvs


def cases(tmp_path: Path):
    """(argv, hf_config, the plan's expert map) of every SGLang launch checked."""
    inst = load_instance(str(DSV3))
    doc = json.loads(SOLVED.read_text())
    p, _, out = exported_agg(doc, "sglang", tmp_path, inst)
    yield from ((argv, DEEPSEEK_V3, p.experts) for argv in sglang_commands(out))
    big = inst.model_copy(update={"hardware": inst.hardware.model_copy(update={"num_gpus": 64})})
    doc = bench_export.deepseek_plan()                  # 32 redundant experts, PP2, 8 nodes
    p, _, out = exported_agg(doc, "sglang", tmp_path, big)
    yield from ((argv, DEEPSEEK_V3, p.experts) for argv in sglang_commands(out))
    for shape in (dict(tp=1, dp=8, ep=8, redundant=8), dict(tp=2, dp=4, ep=8),
                  dict(tp=8, dp=1, ep=4, etp=2, redundant=4)):
        doc = hand_plan(**shape)
        p, _, out = exported_agg(doc, "sglang", tmp_path)
        yield from ((argv, qwen3_moe(8, 16), p.experts) for argv in sglang_commands(out))
    for name, disagg, inst in (("qwen", qwen_doc(), qwen_instance(16)),
                               ("hand", CASES["two-nodes"][0], INSTANCES.get("two-nodes", lambda: None)())):
        out = tmp_path / f"disagg-{name}"
        exported(disagg, "sglang", out, inst)
        pools = {pool["role"]: pool for pool in disagg["pools"]}
        for role, argv in zip(("prefill", "decode"), sglang_commands(out)):
            p = plan_from_doc({k: v for k, v in pools[role].items() if k not in ("role", "replicas")},
                              inst)
            config = qwen3_moe(48, 128) if name == "qwen" else qwen3_moe(8, 16)
            yield argv, config, p.experts


def run_tool(python: str, runtime: str, lines: list[dict], tmp_path: Path) -> list[dict]:
    path = tmp_path / f"{runtime}-cases.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = subprocess.run([python, str(TOOL), runtime, str(path)], capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def replica_slots(row: list[int], experts: int) -> list[list[int]]:
    """Per logical expert, the physical slots holding it (the plan's replicas)."""
    return [[p for p, x in enumerate(row) if x == e] for e in range(experts)]


@pytest.mark.slow
def test_sglang_loads_every_exported_map_as_the_plan_has_it(tmp_path):
    python = runtime_python("sglang")
    checked = list(cases(tmp_path))
    results = run_tool(python, "sglang", [{"argv": a, "hf_config": c} for a, c, _ in checked],
                       tmp_path)
    assert len(results) == len(checked) >= 8
    for (argv, _, e), got in zip(checked, results):
        assert "error" not in got, (got["error"], argv)
        rows = [e.row(layer) for layer in range(e.num_layers)]
        assert got["physical_to_logical_map"] == rows
        for layer, row in enumerate(rows):
            padded = got["logical_to_all_physical_map"][layer]
            assert [[s for s in slots if s >= 0] for slots in padded] == replica_slots(row, e.num_experts)
        assert got["ep_size"] == e.ep and got["num_local_physical_experts"] == e.slots_per_rank


@pytest.mark.slow
def test_vllm_start_map_and_rank_slots_are_what_the_export_assumes(tmp_path):
    python = runtime_python("vllm")
    shapes = [(16, 0, 8), (16, 8, 8), (256, 32, 32), (128, 0, 4)]
    results = run_tool(python, "vllm", [{"num_experts": e, "num_redundant": r, "ep": ep}
                                        for e, r, ep in shapes], tmp_path)
    assert len(results) == len(shapes)
    for (experts, redundant, ep), got in zip(shapes, results):
        doc = hand_plan(tp=1, dp=ep, ep=ep, experts=experts, redundant=redundant, layers=2)
        e = plan_from_doc(doc).experts
        assert got["physical_to_logical_map"] == list(vllm_linear(e)[0])
        s = e.slots_per_rank
        assert got["rank_slots"] == [list(range(r * s, (r + 1) * s)) for r in range(ep)]


def test_the_sglang_cases_cover_replicas_dense_layers_and_pools(tmp_path):
    """Runs everywhere (no runtime needed): the loader cases are not trivial."""
    checked = list(cases(tmp_path))
    assert any(e.redundant for _, _, e in checked)
    assert any(e.dense_layers for _, _, e in checked)
    assert sum("--disaggregation-mode" in a for a, _, _ in checked) == 4
