"""Hardware profiles: the format, the shipped files, the fitting, and their use in the costs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import microbench_gpu as mb
from optimizer.costs import formulas as cm
from optimizer.costs import tables
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.profile import PROFILE_DIR, Curve, Efficiency, ProfileError, load_profile, read_profile
from optimizer.costs.units import seconds_to_ns
from optimizer.inputs.presets import GPU_PRESETS
from optimizer.inputs.schema import Instance
from optimizer.profiles.fit import fit_csv

REPO = Path(__file__).resolve().parents[2]
MOEOPT = str(Path(sys.executable).parent / "moeopt")
SEED = json.loads((REPO / "instances" / "10b_moe.json").read_text())


def _instance(doc: dict, **hardware) -> Instance:
    doc = copy.deepcopy(doc)
    doc["hardware"].update(hardware)
    return Instance.model_validate(doc)


def _costs(inst: Instance, deg: Degrees):
    facts = tables.LinkFacts.of(megatron_layout(deg, inst.hardware.gpus_per_node))
    return tables.stage_costs(inst, deg, facts)


SEED_DEG = Degrees(tp=4, pp=2, dp=8, ep=8, etp=1, edp=4, micro_batches=1)


# ---------------------------------------------------------------- format and shipped files
@pytest.mark.parametrize("name", sorted(GPU_PRESETS))
def test_every_preset_ships_a_profile_with_provenance(name):
    profile = load_profile(name)
    assert profile.name == name and profile.format_version == 1
    assert profile.provenance.source and profile.provenance.fitted
    assert profile.peak_tflops_by_dtype == GPU_PRESETS[name]["gpu"]["peak_tflops_by_dtype"]
    fitted = name in ("h100-sxm", "h200-sxm", "a100-80gb", "b200")
    assert profile.is_flat is not fitted
    if fitted:
        assert "aiconfigurator" in profile.provenance.source


def test_seed_profile_is_flat_and_says_nothing_was_measured():
    profile = load_profile("seed-gpu")
    assert profile.is_flat
    assert "no measured data" in profile.provenance.source


def test_curve_is_log2_linear_and_clamped():
    curve = Curve(x=[1, 4, 16], efficiency=[0.2, 0.6, 0.4])
    # log2(2) = 1 is halfway from log2(1) = 0 to log2(4) = 2: (0.2 + 0.6) / 2 = 0.4
    assert curve.at(2) == pytest.approx(0.4)
    # log2(8) = 3 is halfway from 2 to 4: (0.6 + 0.4) / 2 = 0.5
    assert curve.at(8) == pytest.approx(0.5)
    assert curve.at(0.5) == 0.2 and curve.at(1e6) == 0.4


def test_bad_profile_is_one_line_naming_the_field(tmp_path):
    doc = json.loads((PROFILE_DIR / "seed-gpu.json").read_text())
    doc["gemm"] = [{"dtype": "bf16", "n": 4096, "k": 4096, "over_m": {"x": [4, 1], "efficiency": [0.5, 0.5]}}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ProfileError) as err:
        read_profile(bad)
    message = str(err.value)
    assert "\n" not in message and "gemm.0.over_m" in message and "ascending" in message
    doc["gemm"] = []
    doc["surprise"] = 1
    bad.write_text(json.dumps(doc))
    with pytest.raises(ProfileError, match="surprise"):
        read_profile(bad)


def test_bad_profile_path_exits_2_with_one_line(tmp_path):
    doc = copy.deepcopy(SEED)
    doc["hardware"]["profile"] = str(tmp_path / "missing.json")
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(doc))
    out = subprocess.run([MOEOPT, "check", str(path),
                          str(REPO / "instances" / "seed_plan.json")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "hardware.profile" in out.stderr


# ---------------------------------------------------------------- flat profiles change nothing
def test_seed_profile_gives_exactly_the_flat_costs():
    flat = _costs(_instance(SEED), SEED_DEG)
    seed = _costs(_instance(SEED, profile="seed-gpu"), SEED_DEG)
    assert flat == seed


def test_preset_selects_its_profile():
    doc = json.loads((REPO / "instances" / "deepseek_v3_fp8_h100.json").read_text())
    assert Instance.model_validate(doc).hardware.profile == "h100-sxm"


# ---------------------------------------------------------------- the profile inside the formulas
def _constant_profile(tmp_path, eta_experts: float, eta_gemm: float, eta_attention: float,
                      all_reduce: tuple[float, float]) -> str:
    """A profile whose every curve is one constant value."""
    def flat_curve(value):
        return {"x": [1.0], "efficiency": [value]}
    doc = json.loads((PROFILE_DIR / "seed-gpu.json").read_text())
    doc.update({
        "gemm": [{"dtype": "bf16", "n": 4096, "k": 4096, "over_m": flat_curve(eta_gemm)}],
        "grouped_gemm": [{"dtype": "bf16", "hidden": 4096, "inter": 4096, "experts_per_gpu": 2,
                          "over_tokens_per_expert": flat_curve(eta_experts)}],
        "attention": [{"kind": "mha", "phase": phase, "over_context": flat_curve(eta_attention)}
                      for phase in ("prefill", "decode")],
        "collectives": [{"op": "all_reduce", "link": "intra", "family": "custom", "peers": 4,
                         "latency_us": all_reduce[0], "over_bytes": flat_curve(all_reduce[1])}]})
    path = tmp_path / "constant.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_profiled_expert_and_allreduce_terms_by_hand(tmp_path):
    path = _constant_profile(tmp_path, 0.25, 0.5, 0.5, (7.0, 0.6))
    inst = _instance(SEED, profile=path)
    deg = SEED_DEG
    facts = tables.LinkFacts.of(megatron_layout(deg, 8))
    tokens = 16 * 10240  # one micro-batch of 16 sequences per replica
    f_ns, w_ns, a_ns, _, _ = tables.moe_terms(inst, deg, tokens, False, facts)
    # rows of one EP group: 163,840 * 2 * 1 * 8 / 4 = 655,360; each 2*2*4096*4096 FLOP
    rows = 655_360
    flops = rows * 2 * 2 * 4096 * 4096
    assert f_ns == seconds_to_ns(flops / (400e12 * 0.25))  # fp16 peak 400 TFLOP/s at eta 0.25
    # weights: 16/8 = 2 experts of 2*4096*4096 fp16 weights at 1.8 TB/s * 0.25
    assert w_ns == seconds_to_ns(2 * 2 * 4096 * 4096 * 2 / (1.8e12 * 0.25))
    # activations in and out: rows * 2 B * 2 * (4096 + 4096)
    assert a_ns == seconds_to_ns(rows * 2 * 2 * 8192 / (1.8e12 * 0.25))
    # TP all-reduce of 163,840 * 4096 * 2 B over 4 GPUs at 400 GB/s * 0.6 + one 7 us message
    ar = 2 * 3 / 4 * tokens * 4096 * 2 / (400e9 * 0.6) + 7e-6
    _, tp_comm = tables.dense_layer_ns(inst, deg, 0, tokens, 1.0, 0.0, facts)
    assert tp_comm == seconds_to_ns(ar)


def test_profiled_dense_layer_is_gemm_plus_attention_by_hand(tmp_path):
    path = _constant_profile(tmp_path, 0.25, 0.5, 0.2, (7.0, 0.6))
    inst = _instance(SEED, profile=path)
    m, deg = inst.model, SEED_DEG
    facts = tables.LinkFacts.of(megatron_layout(deg, 8))
    tokens, s = 16 * 10240, 10240
    flops = tokens * cm.dense_flops_per_token_layer(m, s, 0)
    kv = tokens * cm.kv_bytes_per_token_layer(m, deg.tp)
    dense_ns, tp_ns = tables.dense_layer_ns(inst, deg, 0, tokens, flops, kv, facts)
    # linear: projections (4*4096*4096) + router (2*4096*16) FLOP per token, split over TP 4,
    # at 400 TFLOP/s * 0.5 (compute-bound: 163,840 tokens)
    linear_flops = tokens * (2 * 4 * 4096 * 4096 + 2 * 4096 * 16) / 4
    # attention core: 2 * (2*16*256) * s/2 per token, over TP 4, at 400 TFLOP/s * 0.2
    core_flops = tokens * 2 * (2 * 16 * 256) * s / 2 / 4
    # elementwise: two residual-add + RMSNorm per token (4 * 4096 values of 2 B each) and no
    # gate (plain FFN, no shared expert) = 65,536 B per token, at 1.8 TB/s * 0.8 (flat HBM):
    # 163,840 * 65,536 = 10,737,418,240 B -> 7.456540 ms
    elementwise_bytes = tokens * 2 * 2 * 4 * 4096
    expected = (linear_flops / (400e12 * 0.5) + core_flops / (400e12 * 0.2)
                + elementwise_bytes / (1.8e12 * 0.8))
    assert dense_ns - tp_ns == seconds_to_ns(expected)


# ---------------------------------------------------------------- fitting recovers known efficiencies
KNOWN = {"gemm": 0.37, "grouped": 0.21, "decode": 0.63, "prefill": 0.44, "all_reduce": 0.55}


def _synthetic_rows():
    peaks, bw = GPU_PRESETS["h100-sxm"]["gpu"]["peak_tflops_by_dtype"], 3350e9
    def sol(row, dtype):
        return max(float(row["flops"]) / (peaks[dtype] * 1e12), float(row["hbm_bytes"]) / bw)
    rows = []
    for m in (1, 16, 256, 4096):
        r = mb.gemm_row("bf16", m, 4096, 4096, 1.0)
        r["latency_s"] = sol(r, "bf16") / KNOWN["gemm"]
        rows.append(r)
    for tpe in (1, 8, 64):
        r = mb.grouped_row("fp8", 32, tpe, 7168, 2048, 1.0)
        r["latency_s"] = sol(r, "fp8") / KNOWN["grouped"]
        rows.append(r)
    for ctx in (512, 8192):
        for phase in ("prefill", "decode"):
            r = mb.attention_row(phase, 8, ctx, 32, 8, 128, 1.0)
            r["latency_s"] = sol(r, "bf16") / KNOWN[phase]
            rows.append(r)
    alpha = 6e-6
    for size in (1, 2 ** 20, 2 ** 26):
        rows.append(mb.collective_row("all_reduce", 8, size,
                                      alpha + 2 * 7 / 8 * size / (450e9 * KNOWN["all_reduce"]), family="custom"))
    return rows


def test_fit_recovers_known_efficiencies(tmp_path):
    path = tmp_path / "m.csv"
    mb.write_csv(_synthetic_rows(), str(path))
    profile = fit_csv(path, "h100-sxm", today="2026-01-01")
    eff = Efficiency(Instance.model_validate(json.loads(
        (REPO / "instances" / "deepseek_v3_fp8_h100.json").read_text())).hardware.gpu, profile, "fp8")
    assert eff.gemm_eta("bf16", 100, 4096, 4096) == pytest.approx(KNOWN["gemm"], abs=1e-5)
    assert eff.grouped_eta("fp8", 20, 7168, 2048, 32) == pytest.approx(KNOWN["grouped"], abs=1e-5)
    assert eff.attention_eta("gqa", False, "decode", 2000) == pytest.approx(KNOWN["decode"], abs=1e-5)
    assert eff.attention_eta("gqa", False, "prefill", 2000) == pytest.approx(KNOWN["prefill"], abs=1e-5)
    latency_s, eta = eff.collective("all_reduce", "intra", 8, 2 ** 24)
    assert latency_s == pytest.approx(6e-6, rel=1e-3)
    assert eta == pytest.approx(KNOWN["all_reduce"], rel=1e-3)


def test_microbench_rows_have_the_documented_columns_and_counts(tmp_path):
    row = mb.gemm_row("fp8", 16, 1024, 2048, 1e-5)
    # 2 * 16 * 1024 * 2048 FLOP; 1024*2048 fp8 weight bytes + 2 B * 16 * (1024 + 2048)
    assert row["flops"] == 67_108_864.0 and row["hbm_bytes"] == 2_097_152 + 98_304
    path = tmp_path / "out.csv"
    mb.write_csv([row], str(path))
    header = path.read_text().splitlines()[0]
    assert header.split(",") == list(mb.COLUMNS)
    with pytest.raises(ValueError):
        mb._row(op="gemm", bogus=1)


def test_microbench_without_torch_says_so_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("pytest")
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed here")
    except ImportError:
        pass
    out = tmp_path / "never.csv"
    assert mb.main(["-o", str(out)]) == 0
    assert "PyTorch is not installed" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- the commands
def _moeopt(*args, cwd=REPO):
    return subprocess.run([MOEOPT, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_calibrate_from_csv_writes_a_profile_the_costs_use(tmp_path):
    csv_path, out = tmp_path / "m.csv", tmp_path / "fitted.json"
    mb.write_csv(_synthetic_rows(), str(csv_path))
    result = _moeopt("calibrate", "--from", csv_path, "--preset", "h100-sxm", "-o", out)
    assert result.returncode == 0, result.stderr
    profile = read_profile(out)
    assert len(profile.gemm) == 1 and len(profile.grouped_gemm) == 1 and len(profile.attention) == 2
    assert profile.gemm[0].over_m.at(64) == pytest.approx(KNOWN["gemm"], abs=1e-5)


def test_calibrate_bad_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("op,latency_s\nconvolution,1e-3\n")
    out = tmp_path / "p.json"
    result = _moeopt("calibrate", "--from", bad, "--preset", "h100-sxm", "-o", out)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "op='convolution'" in result.stderr and not out.exists()
    result = _moeopt("calibrate", "--from", bad, "--preset", "tpu", "-o", out)
    assert result.returncode == 2 and "--preset='tpu'" in result.stderr
    result = _moeopt("calibrate", "--preset", "h100-sxm", "-o", out)
    assert result.returncode == 2 and "exactly one" in result.stderr


def test_calibrate_from_aiconfigurator_needs_the_extra(tmp_path):
    try:
        import aiconfigurator_core  # noqa: F401
        pytest.skip("aiconfigurator-core is installed here")
    except ImportError:
        pass
    result = _moeopt("calibrate", "--from-aiconfigurator", "--preset", "h100-sxm", "-o", tmp_path / "p.json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "moeopt[calibrate]" in result.stderr


def test_explain_breakdown_adds_up_to_the_evaluated_stage_times():
    result = _moeopt("explain", REPO / "instances" / "10b_moe.json", REPO / "instances" / "seed_plan.json",
                     "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    prefill = doc["phases"]["prefill"]
    # the seed plan (docs/cost-model.md §1.6 worked example, Megatron layout here): stage 0 + stage 1
    # of one micro-batch plus one pipeline send; the parts must add to the whole
    assert sum(op["time_ms"] for op in prefill["operators"]) == pytest.approx(prefill["total_ms"])
    from optimizer.inputs.files import load_model
    from optimizer.plan.evaluate import evaluate
    from optimizer.plan.files import PlanFile, plan_from_file
    inst = Instance.model_validate(SEED)
    plan, _ = plan_from_file(inst, load_model(str(REPO / "instances" / "seed_plan.json"), PlanFile, "plan"))
    ev = evaluate(inst, plan)
    assert prefill["total_ms"] * 1e6 == pytest.approx(sum(ev.stage_ns) + ev.costs.prefill.p2p_ns, abs=2)
    assert all(op["source"].startswith(("flat", "alpha-beta")) for op in prefill["operators"])
    experts = next(op for op in prefill["operators"] if op["operator"] == "routed_experts")
    assert experts["sol_fraction"] == pytest.approx(0.5, abs=0.01)  # flat 50 % of peak, compute-bound
    memory = doc["memory"]
    assert sum(p["gb"] for p in memory["parts"]) == pytest.approx(memory["total_gb"])


def test_engine_steps_equal_static_phases_with_a_fitted_profile():
    """As tests/costs/test_step_time.py's check, under the H100 profile: a step of whole prompts
    is the static prefill makespan and a decode step at the mean context the static decode
    step (the profile is looked up with the same shapes on both paths)."""
    from optimizer.costs.step_time import step_batch, step_ns
    from optimizer.costs.timing import batch_times
    from optimizer.costs.units import LOAD_SCALE
    doc = copy.deepcopy(SEED)
    doc["workload"]["output_tokens"] = 64
    inst = _instance(doc, profile="h100-sxm")
    deg = Degrees(tp=2, pp=2, dp=2, ep=4, etp=1, edp=1, micro_batches=2)
    facts = tables.LinkFacts.of(megatron_layout(deg, 8))
    costs = tables.stage_costs(inst, deg, facts)
    assert costs != tables.stage_costs(_instance(doc), deg, facts)  # the profile is in use
    stages = [tuple(range(0, 8)), tuple(range(8, 16))]
    hot = {l: LOAD_SCALE // deg.ep for l in range(16)}
    _, ttft, tpot, _ = batch_times(costs, stages, hot)
    seqs, prompt = costs.seqs_per_micro_batch, inst.workload.prompt_tokens
    assert step_ns(inst, deg, facts, stages, hot, step_batch(inst, [(0, prompt, True)] * seqs, []), 2) == ttft
    context = int(tables.decode_context(inst))
    assert step_ns(inst, deg, facts, stages, hot, step_batch(inst, [], [context] * seqs), 2) == tpot


def test_aiconfigurator_fitters_recover_known_efficiencies():
    """The aiconfigurator readers on tables shaped like its parquet files (latency in ms),
    made from known efficiencies with the preset's peaks: the fitted curves give them back."""
    import pandas as pd

    from optimizer.profiles import aiconfigurator as aic
    from optimizer.profiles.fit import Sol
    spec = GPU_PRESETS["h100-sxm"]
    sol = Sol(spec["gpu"]["peak_tflops_by_dtype"], spec["gpu"]["hbm_bandwidth_gb_s"])
    gemm = pd.DataFrame([{"gemm_dtype": "fp8_block", "m": m, "n": 4096, "k": 7168,
                          "latency": sol(2.0 * m * 4096 * 7168, 4096 * 7168 + 2 * m * (4096 + 7168), "fp8") / 0.3 * 1e3}
                         for m in (1, 8, 64, 512, 4096)])
    (table,) = aic.fit_gemm(gemm, sol)
    assert (table["dtype"], table["n"], table["k"]) == ("fp8", 4096, 7168)
    assert all(e == pytest.approx(0.3, abs=1e-5) for e in table["over_m"]["efficiency"])
    rows = []
    for tokens in (16, 256, 4096):
        # DeepSeek-V3's experts on EP 8: per GPU T*k/EP rows through 3 h x f matrices
        flops = tokens * 8 * 2 * 3 * 7168 * 2048 / 8
        hit = 1 - (1 - 8 / 256) ** tokens
        num_bytes = 256 / 8 * hit * 3 * 7168 * 2048 + tokens * 8 / 8 * 2 * 2 * (7168 + 2048)
        rows.append({"moe_dtype": "fp8_block", "num_tokens": tokens, "hidden_size": 7168, "inter_size": 2048,
                     "topk": 8, "num_experts": 256, "moe_tp_size": 1, "moe_ep_size": 8,
                     "distribution": "balanced", "kernel_source": "cutlass",
                     "latency": sol(flops, num_bytes, "fp8") / 0.18 * 1e3})
    (grouped,) = aic.fit_grouped(pd.DataFrame(rows), sol)
    assert (grouped["hidden"], grouped["inter"], grouped["experts_per_gpu"]) == (7168, 2048, 32)
    assert grouped["over_tokens_per_expert"]["x"] == [0.5, 8.0, 128.0]  # T * 8 / 256
    assert all(e == pytest.approx(0.18, abs=1e-5) for e in grouped["over_tokens_per_expert"]["efficiency"])
    # all-reduce over 8 GPUs: 4 us per message + 2*7/8 * S / (450 GB/s * 0.7); sizes in bf16 elements
    custom = pd.DataFrame([{"allreduce_dtype": "bfloat16", "num_gpus": 8, "message_size": e,
                            "latency": (4e-6 + 2 * 7 / 8 * e * 2 / (450e9 * 0.7)) * 1e3}
                           for e in (1, 2 ** 16, 2 ** 22)])
    (ar,) = aic.fit_collectives(custom, None, None, None, 450.0, 50.0)
    assert ar["latency_us"] == pytest.approx(4.0, abs=0.01)
    assert ar["over_bytes"]["efficiency"][-1] == pytest.approx(0.7, rel=1e-3)
