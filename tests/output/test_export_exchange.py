"""Exports launch the MoE token exchange the plan's costs assume (hardware.moe_token_exchange,
recorded in the plan as ``moe_token_exchange`` when it is not the default DeepEP): SGLang's
--moe-a2a-backend, vLLM's --all2all-backend; TensorRT-LLM has no option and says so."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from optimizer.cli.common import load_instance
from optimizer.output.export import export, plan_from_doc, write_export
from optimizer.output.export.launch_settings import moe_exchange_args
from optimizer.plan.files import record_exchange
from tests.output.test_export import flag, hand_plan, launch_args

REPO = Path(__file__).resolve().parents[2]
DSV3 = REPO / "instances" / "deepseek_v3_fp8_h200.json"
SOLVED = REPO / "tests" / "fixtures" / "runtimes" / "plans" / "deepseek_v3_fp8_h200.plan.json"


def _launch(doc: dict, runtime: str, tmp_path: Path, inst=None):
    p = plan_from_doc(doc, inst)
    out = tmp_path / f"{runtime}-{len(list(tmp_path.iterdir()))}"
    ex = export(p, runtime, out, None, inst)
    write_export(ex, out)
    return ex, launch_args(out)[1][0]


def test_deepep_plan_asks_for_deepep(tmp_path):
    doc = hand_plan(tp=1, dp=8, ep=8)             # no moe_token_exchange: DeepEP
    ex, argv = _launch(doc, "sglang", tmp_path)
    assert flag(argv, "--moe-a2a-backend") == "deepep" and ex.settings["moe_a2a_backend"] == "deepep"
    ex, argv = _launch(doc, "vllm", tmp_path)
    assert flag(argv, "--all2all-backend") == "deepep_high_throughput"
    assert any("one DeepEP mode per server" in w for w in ex.warnings)
    ex, _ = _launch(doc, "trtllm", tmp_path)
    assert any("the DeepEP all-to-all" in n for n in ex.notes)


def test_allgather_plan_asks_for_the_allgather_path(tmp_path):
    doc = dict(hand_plan(tp=1, dp=8, ep=8), moe_token_exchange="allgather")
    ex, argv = _launch(doc, "sglang", tmp_path)
    assert flag(argv, "--moe-a2a-backend") == "none"
    ex, argv = _launch(doc, "vllm", tmp_path)
    assert flag(argv, "--all2all-backend") == "allgather_reducescatter"
    assert not any("DeepEP" in w for w in ex.warnings)
    ex, _ = _launch(doc, "trtllm", tmp_path)
    assert any("an all-gather + reduce-scatter" in n for n in ex.notes)


def test_sglang_hybrid_ep_cannot_run_deepep_and_warns(tmp_path):
    # TP2 x DP4 = 8 GPUs, EP4 x ETP2: SGLang's --tp 8 > --ep 4, DeepEP needs ep = tp
    ex, argv = _launch(hand_plan(tp=2, dp=4, ep=4, etp=2), "sglang", tmp_path)
    assert "--moe-a2a-backend" not in argv
    assert any("DeepEP backend needs ep = tp = 8" in w for w in ex.warnings)


def test_no_expert_parallelism_no_exchange_flag(tmp_path):
    doc = hand_plan(tp=8, dp=1, ep=1, etp=8)
    for runtime, name in (("sglang", "--moe-a2a-backend"), ("vllm", "--all2all-backend")):
        try:
            _, argv = _launch(doc, runtime, tmp_path)
        except Exception as err:   # a runtime that cannot express the shape refuses it
            assert type(err).__name__ == "InputError"
            continue
        assert name not in argv


def test_vllm_decode_pool_gets_the_low_latency_kernels():
    p = plan_from_doc(hand_plan(tp=1, dp=8, ep=8))
    assert moe_exchange_args("vllm", p, 8, "decode") == ([("--all2all-backend", "deepep_low_latency")], [])
    assert moe_exchange_args("vllm", p, 8, "prefill") == ([("--all2all-backend", "deepep_high_throughput")], [])


def test_the_instance_decides_when_the_plan_is_silent_and_the_plan_is_recorded(tmp_path):
    inst = load_instance(str(DSV3))
    gather = inst.model_copy(update={"hardware": inst.hardware.model_copy(
        update={"moe_token_exchange": "allgather"})})
    doc = json.loads(SOLVED.read_text())
    assert "moe_token_exchange" not in doc
    assert plan_from_doc(doc, gather).moe_token_exchange == "allgather"
    _, argv = _launch(doc, "sglang", tmp_path, gather)
    assert flag(argv, "--moe-a2a-backend") == "none"
    # the writer records a non-default exchange and leaves the default out
    assert "moe_token_exchange" not in record_exchange(copy.deepcopy(doc), inst)
    written = record_exchange(copy.deepcopy(doc), gather)
    assert written["moe_token_exchange"] == "allgather"
    # a plan priced on one path read with an instance that says another: the plan's wins, noted
    p = plan_from_doc(written, inst)
    assert p.moe_token_exchange == "allgather"
    assert any("moe_token_exchange='allgather'" in n for n in p.notes)
