"""``moeopt export``: every format round-trips (the files parse back to the plan) and obeys its
runtime's own rules; plans a runtime cannot express end with exit 2 and one line."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks import bench_export
from optimizer.cli import main
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.errors import InputError
from optimizer.output.export import (
    ExpertMap,
    export,
    hot_over_mean,
    load_plan,
    megatron_pipeline_args,
    parse_compact,
    plan_from_doc,
    vllm_linear,
    write_export,
)
from optimizer.output.export.launch_settings import missing_warning

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"


# ---------------------------------------------------------------------------------------------
# Hand plans


def hand_plan(tp=1, pp=1, dp=8, ep=8, etp=1, layers=8, experts=16, redundant=0, stages=None,
              dense=(), gpn=8, seed=0, contiguous=False) -> dict:
    """A plan JSON in the contract's shape; placement shuffled (not contiguous) unless asked;
    the first ``redundant`` ids of the order get a second replica on another rank."""
    rng = random.Random(seed)
    per_stage = tp * dp
    edp = per_stage // (etp * ep)
    slots_per_rank = (experts + redundant) // ep
    assert slots_per_rank * ep == experts + redundant
    placement = {}
    for layer in range(layers):
        if layer in dense:
            continue
        ids = list(range(experts))
        if not contiguous:
            rng.shuffle(ids)
        ids += ids[:redundant]      # replica of ids[i] sits E slots later: on another rank
        ranks = [ids[r * slots_per_rank:(r + 1) * slots_per_rank] for r in range(ep)]
        placement[str(layer)] = [sorted(r) for r in ranks]
    if stages is None:
        base, extra = divmod(layers, pp)
        stages = [base + (1 if j < extra else 0) for j in range(pp)]
    assert sum(stages) == layers and len(stages) == pp
    st, start = [], 0
    for j, n in enumerate(stages):
        st.append({"stage": j, "layers": list(range(start, start + n))})
        start += n
    deg = Degrees(tp, pp, dp, ep, etp, edp, 1)
    gpus = [{"rank": s.rank, "node": s.node, "local_rank": s.local_rank, "stage": s.stage,
             "tp_rank": s.tp_rank, "dp_rank": s.dp_rank, "ep_rank": s.ep_rank,
             "etp_rank": s.etp_rank, "edp_rank": s.edp_rank,
             "memory_gb": {"weights": 1.0, "kv_cache": 2.0, "activations": 0.5, "buffers": 0.25,
                           "total": 3.75}}
            for s in megatron_layout(deg, gpn)]
    doc = {"schema_version": 1, "instance": "hand", "status": "feasible",
           "num_gpus": tp * pp * dp,
           "degrees": {"tp": tp, "pp": pp, "dp": dp, "ep": ep, "etp": etp, "edp": edp},
           "micro_batches": 1, "num_experts": experts, "stages": st,
           "expert_placement": placement, "gpus": gpus, "metrics": {"load_imbalance": 0.1}}
    if redundant:
        doc["redundant_experts"] = redundant
    if dense:
        doc["dense_layers"] = list(dense)
    return doc


def run_export(doc: dict, fmt: str, tmp_path: Path, inst=None, loads=None):
    p = plan_from_doc(doc, inst)
    out = tmp_path / fmt
    ex = export(p, fmt, out, loads)
    write_export(ex, out)
    return p, ex, out


def launch_args(out: Path) -> tuple[dict[str, str], list[list[str]]]:
    """(exported env, argv of every launch command) from launch.sh."""
    text = (out / "launch.sh").read_text().replace("\\\n", " ")
    env, cmds = {}, []
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"export (\w+)=(.*)$", line)
        if m and m.group(1) != "CUDA_VISIBLE_DEVICES":
            env[m.group(1)] = shlex.split(m.group(2))[0]
        elif line.startswith(("python3 -m sglang", "vllm serve", "trtllm-serve", "srun", "torchrun")):
            cmds.append(shlex.split(line))
    return env, cmds


def flag(argv: list[str], name: str, default=None):
    if name not in argv:
        return default
    i = argv.index(name)
    return True if i + 1 >= len(argv) or argv[i + 1].startswith("-") else argv[i + 1]


def placement_rows(doc: dict) -> dict[int, list[list[int]]]:
    return {int(k): v for k, v in doc["expert_placement"].items()}


def instance_and_local_dp(doc: dict, gpu: dict) -> tuple[int, int]:
    d = doc["degrees"]
    dp_per = d["dp"] // d["edp"]
    return gpu["edp_rank"], gpu["dp_rank"] - gpu["edp_rank"] * dp_per


# ---------------------------------------------------------------------------------------------
# SGLang


SGLANG_CASES = [
    dict(tp=1, dp=8, ep=8),                                  # DP-attention, EP = tp world
    dict(tp=2, dp=4, ep=8, redundant=8),                     # attn_tp 2, replicas
    dict(tp=8, dp=1, ep=4, etp=2),                           # hybrid EP4 x MoE-TP2
    dict(tp=1, dp=8, ep=2, etp=2),                           # 2 EDP copies -> 2 servers
    dict(tp=2, pp=3, dp=4, ep=8, layers=10, stages=[3, 4, 3], redundant=8),
    dict(tp=1, dp=16, ep=16, experts=32, redundant=16),      # 2 nodes, 1 server
]


@pytest.mark.parametrize("case", SGLANG_CASES)
def test_sglang_round_trip(case, tmp_path):
    doc = hand_plan(**case)
    p, ex, out = run_export(doc, "sglang", tmp_path)
    env, cmds = launch_args(out)
    (argv,) = cmds
    tp, ep = int(flag(argv, "--tp-size")), int(flag(argv, "--ep-size"))
    dp = int(flag(argv, "--dp-size", 1))
    pp = int(flag(argv, "--pp-size", 1))
    redundant = int(flag(argv, "--ep-num-redundant-experts"))
    d = doc["degrees"]
    # SGLang's rules (docs/runtimes.md 1.2): ep <= tp, moe_tp = tp/ep, attn_tp = tp/dp, GPUs = tp*pp
    assert ep <= tp and tp % ep == 0 and tp % dp == 0
    assert (flag(argv, "--enable-dp-attention") is True) == (dp > 1)
    assert tp // dp == d["tp"] and tp // ep == d["etp"] and ep == d["ep"] and pp == d["pp"]
    assert ex.instances * tp * pp == doc["num_gpus"]
    sizes = [len(s["layers"]) for s in doc["stages"]]
    assert env.get("SGLANG_PP_LAYER_PARTITION") == (",".join(map(str, sizes))
                                                    if len(set(sizes)) > 1 else None)
    mp = json.loads((out / "expert_location.json").read_text())["physical_to_logical_map"]
    experts = doc["num_experts"]
    assert len(mp) == sum(len(s["layers"]) for s in doc["stages"])      # one row per layer
    assert redundant == case.get("redundant", 0)
    for row in mp:
        assert len(row) == experts + redundant and len(row) % ep == 0
        assert set(row) == set(range(experts))        # every expert at least once
    # each GPU gets the plan's experts: SGLang rank rules, recomputed here
    per = len(mp[0]) // ep
    rows = placement_rows(doc)
    for g in doc["gpus"]:
        _, local_dp = instance_and_local_dp(doc, g)
        tp_rank = local_dp * (tp // dp) + g["tp_rank"]
        sg_ep = tp_rank // (tp // ep)
        for layer in doc["stages"][g["stage"]]["layers"]:
            assert sorted(mp[layer][sg_ep * per:(sg_ep + 1) * per]) == sorted(rows[layer][g["ep_rank"]])
    assert not [w for w in ex.warnings if "EP rank" in w]


def test_sglang_dense_rows_and_deepseek_size(tmp_path):
    doc = bench_export.deepseek_plan()
    p, ex, out = run_export(doc, "sglang", tmp_path)
    mp = json.loads((out / "expert_location.json").read_text())["physical_to_logical_map"]
    assert len(mp) == 61 and {len(r) for r in mp} == {288}
    assert mp[0] == [i % 256 for i in range(288)]          # dense layer: trivial map
    assert mp[3] == [x for r in doc["expert_placement"]["3"] for x in r]
    env, (argv,) = launch_args(out)
    assert env["SGLANG_PP_LAYER_PARTITION"] == "31,30"
    assert flag(argv, "--nnodes") == "8" and flag(argv, "--tp-size") == "32"


def test_sglang_rejects_edp_cutting_tp_groups(tmp_path):
    doc = hand_plan(tp=4, dp=2, ep=2)      # EDP 4 copies of EP2 inside TP4 groups
    with pytest.raises(InputError, match="cut through attention TP4"):
        run_export(doc, "sglang", tmp_path)


# ---------------------------------------------------------------------------------------------
# TensorRT-LLM


def parse_yaml(text: str) -> dict:
    """The block-mapping subset moeopt writes: 'key: scalar|[flow list]' and nested 'key:'."""
    root: dict = {}
    stack = [(-1, root)]
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        key, _, value = raw.strip().partition(":")
        key = int(key) if key.isdigit() else key
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        value = value.strip()
        if not value:
            parent[key] = {}
            stack.append((indent, parent[key]))
        elif value.startswith("["):
            parent[key] = json.loads(value)
        elif value in ("true", "false"):
            parent[key] = value == "true"
        elif re.fullmatch(r"-?\d+", value):
            parent[key] = int(value)
        else:
            parent[key] = value
    return root


@pytest.mark.parametrize("case", [
    dict(tp=1, dp=8, ep=8, redundant=8),
    dict(tp=8, dp=1, ep=8),
    dict(tp=8, dp=1, ep=4, etp=2),
    dict(tp=1, pp=2, dp=4, ep=4, layers=9, dense=(0,)),
    dict(tp=2, dp=4, ep=2),                                   # 4 instances of TP2
])
def test_trtllm_round_trip(case, tmp_path):
    doc = hand_plan(**case)
    p, ex, out = run_export(doc, "trtllm", tmp_path)
    y = parse_yaml((out / "extra_llm_api_options.yaml").read_text())
    tp, pp = y["tensor_parallel_size"], y["pipeline_parallel_size"]
    ep, mtp = y["moe_expert_parallel_size"], y["moe_tensor_parallel_size"]
    # TRT-LLM Mapping rules: world = tp*pp (cp 1), moe_tp*moe_ep = tp
    assert mtp * ep == tp
    assert ex.instances * tp * pp == doc["num_gpus"]
    assert y["enable_attention_dp"] == (doc["degrees"]["dp"] // doc["degrees"]["edp"] > 1)
    assert y["pp_partition"] == [len(s["layers"]) for s in doc["stages"]]
    lb = y["moe_config"]["load_balancer"]
    assert lb["layer_updates_per_iter"] == 0
    experts = doc["num_experts"]
    assert lb["num_slots"] % ep == 0 and lb["num_slots"] >= experts
    rows = placement_rows(doc)
    assert sorted(lb["initial_global_assignments"]) == sorted(rows)   # MoE layers only
    for layer, slots in lb["initial_global_assignments"].items():
        assert len(slots) == lb["num_slots"] and set(slots) == set(range(experts))
        assert slots == [x for r in rows[layer] for x in r]
    _, (argv,) = launch_args(out)
    assert int(flag(argv, "--tp_size")) == tp and int(flag(argv, "--ep_size")) == ep
    if case.get("etp", 1) > 1:       # TRT-LLM orders MoE ranks EP-fastest: said, not hidden
        assert any("EP-fastest" in w for w in ex.warnings)


def test_trtllm_rejects_mixed_attention_tp_dp(tmp_path):
    with pytest.raises(InputError, match="trtllm: attention TP2 x DP4"):
        run_export(hand_plan(tp=2, dp=4, ep=8), "trtllm", tmp_path)


# ---------------------------------------------------------------------------------------------
# vLLM


def test_vllm_round_trip_and_loss(tmp_path):
    from optimizer.costs.expert_loads import expert_loads
    from optimizer.inputs.files import load_model
    from optimizer.inputs.schema import Instance
    inst = load_model(INSTANCE, Instance, "instance")
    doc = hand_plan(tp=2, dp=4, ep=8, layers=16, experts=16, stages=[9, 7], pp=2)
    doc["instance"] = inst.name
    loads = expert_loads(inst)
    p, ex, out = run_export(doc, "vllm", tmp_path, inst, loads)
    env, (argv, other) = launch_args(out)     # 16 GPUs on 2 nodes: head + headless node
    tp, dp, pp = int(flag(argv, "-tp")), int(flag(argv, "-dp")), int(flag(argv, "-pp"))
    local = int(flag(argv, "--data-parallel-size-local"))
    assert local * tp * pp == 8 and flag(other, "--headless") is True
    assert flag(other, "--data-parallel-start-rank") == f"$((NODE_RANK * {local}))"
    assert flag(argv, "--enable-expert-parallel") is True
    assert tp * dp == doc["degrees"]["ep"]                       # EP = TP x DP
    assert tp * dp * pp == doc["num_gpus"]
    assert json.loads(flag(argv, "--eplb-config")) == {"num_redundant_experts": 0}
    assert env["VLLM_PP_LAYER_PARTITION"] == "9,7"
    readme = (out / "README.txt").read_text()
    assert "CANNOT TAKE" in readme and "linear" in readme and "vLLM linear" in readme
    plan = hot_over_mean(p.experts.slots, 8, loads)
    lin = hot_over_mean(vllm_linear(p.experts), 8, loads)
    assert f"{max(lin.values()):.3f}" in readme and f"{max(plan.values()):.3f}" in readme
    assert any("reverts to vLLM's linear" in w for w in ex.warnings)


def test_vllm_redundant_needs_eplb(tmp_path):
    _, ex, out = run_export(hand_plan(tp=1, dp=8, ep=8, redundant=8), "vllm", tmp_path)
    _, (argv,) = launch_args(out)
    assert flag(argv, "--enable-eplb") is True
    assert json.loads(flag(argv, "--eplb-config"))["num_redundant_experts"] == 8
    assert "plan hot/mean 1.100" in ex.warnings[0]       # from the plan's metrics


def test_vllm_linear_map_matches_vllm():
    e = ExpertMap(2, 4, 3, {0: (0, 1, 2, 3, 0, 1), 1: (0, 1, 2, 3, 0, 1)})
    assert vllm_linear(e)[0] == (0, 1, 2, 3, 0, 1)      # eplb_state.py example: 6 slots, 4 experts


@pytest.mark.parametrize("case,message", [
    (dict(tp=8, dp=1, ep=4, etp=2), "vLLM needs ep = 8 and etp = 1"),
    (dict(tp=1, dp=8, ep=1, etp=1), None),                  # 8 separate 1-GPU deployments
    (dict(tp=4, dp=2, ep=1, etp=8), None),                  # MoE tensor-sliced over TP x DP
])
def test_vllm_degree_rules(case, message, tmp_path):
    doc = hand_plan(**case, contiguous=True)
    if message:
        with pytest.raises(InputError, match=message):
            run_export(doc, "vllm", tmp_path)
        return
    _, ex, out = run_export(doc, "vllm", tmp_path)
    _, (argv,) = launch_args(out)
    assert "--enable-expert-parallel" not in argv
    assert ex.instances * int(flag(argv, "-tp")) * int(flag(argv, "-dp")) == doc["num_gpus"]


# ---------------------------------------------------------------------------------------------
# Megatron


def stage_sizes_from_args(args: dict, num_layers: int, pp: int) -> list[int]:
    """Megatron's split, recomputed from the flags (transformer_config / layout parser)."""
    if "--pipeline-model-parallel-layout" in args:
        text = args["--pipeline-model-parallel-layout"]
        text = re.sub(r"(.)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), text)
        stages = text.split("|")
        assert stages[0].startswith("E") and stages[-1].endswith("L") and len(stages) == pp
        return [s.count("t") for s in stages]
    first = int(args.get("--decoder-first-pipeline-num-layers", 0)) or None
    last = int(args.get("--decoder-last-pipeline-num-layers", 0)) or None
    middle = pp - (first is not None) - (last is not None)
    rest = num_layers - (first or 0) - (last or 0)
    assert middle == 0 or rest % middle == 0
    return ([first] if first else []) + [rest // middle] * middle + ([last] if last else [])


@pytest.mark.parametrize("stages,flags", [
    ([4, 4], set()),
    ([3, 3, 2], {"--decoder-last-pipeline-num-layers"}),
    ([2, 3, 3], {"--decoder-first-pipeline-num-layers"}),
    ([2, 3, 3, 1], {"--decoder-first-pipeline-num-layers", "--decoder-last-pipeline-num-layers"}),
    ([1, 3, 2, 3], {"--pipeline-model-parallel-layout"}),
])
def test_megatron_round_trip(stages, flags, tmp_path):
    doc = hand_plan(tp=2, dp=4, ep=4, etp=2, pp=len(stages), layers=sum(stages), stages=stages)
    _, ex, out = run_export(doc, "megatron", tmp_path)
    args = {}
    for line in (out / "megatron_args.txt").read_text().splitlines():
        name, _, value = line.partition(" ")
        args[name] = shlex.split(value)[0] if value else True
    tp, pp = int(args["--tensor-model-parallel-size"]), int(args["--pipeline-model-parallel-size"])
    ep, etp = int(args["--expert-model-parallel-size"]), int(args["--expert-tensor-parallel-size"])
    world = doc["num_gpus"]
    assert world == tp * pp * doc["degrees"]["dp"]                 # world = TP x PP x DP
    assert world % (etp * ep * pp) == 0 and int(args["--num-experts"]) % ep == 0
    assert args.get("--sequence-parallel") is True                 # MoE with TP > 1
    assert flags == {k for k in args if k.startswith(("--decoder", "--pipeline-model-parallel-l"))}
    assert stage_sizes_from_args(args, int(args["--num-layers"]), pp) == stages
    assert any("not Megatron's contiguous" in w for w in ex.warnings)


def test_megatron_contiguous_no_warning_and_rules(tmp_path):
    _, ex, _ = run_export(hand_plan(tp=1, dp=8, ep=8, contiguous=True), "megatron", tmp_path)
    assert ex.warnings == []
    doc = hand_plan(tp=1, dp=8, ep=8, experts=12, redundant=4)     # 16 slots, 12 % 8 != 0
    with pytest.raises(InputError, match="not divisible by --expert-model-parallel-size 8"):
        run_export(doc, "megatron", tmp_path)


def test_megatron_layout_only_when_needed():
    assert megatron_pipeline_args(((0, 1), (2, 3))) == []
    assert megatron_pipeline_args(((0,), (1, 2, 3), (4,), (5, 6))) == [
        ("--pipeline-model-parallel-layout", "'Et|t*3|t|t*2L'")]


# ---------------------------------------------------------------------------------------------
# CSV


def test_csv_round_trip(tmp_path):
    doc = hand_plan(tp=2, pp=2, dp=4, ep=8, redundant=8, layers=6, stages=[4, 2])
    p, _, out = run_export(doc, "csv", tmp_path)
    rows = list(csv.DictReader(io.StringIO((out / "gpus.csv").read_text())))
    assert len(rows) == doc["num_gpus"]
    placement = placement_rows(doc)
    for row, g in zip(rows, doc["gpus"]):
        assert int(row["rank"]) == g["rank"] and int(row["ep_rank"]) == g["ep_rank"]
        assert int(row["node"]) == g["node"] and int(row["local_gpu"]) == g["local_rank"]
        got = parse_compact(row["experts_per_layer"])
        want = {layer: placement[layer][g["ep_rank"]] for layer in doc["stages"][g["stage"]]["layers"]}
        assert got == want
        assert float(row["memory_gb_total"]) == 3.75


# ---------------------------------------------------------------------------------------------
# Plan reading: one-line errors


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["expert_placement"]["0"][0].__setitem__(0, d["expert_placement"]["0"][1][0]),
     r"misses expert"),
    (lambda d: d["expert_placement"]["1"][0].append(3), "every rank must hold the same number"),
    (lambda d: d.__setitem__("redundant_experts", 3), "redundant_experts=3"),
    (lambda d: d["expert_placement"].__setitem__("99", [[0]] * 8), "not a layer"),
    (lambda d: d["degrees"].update(ep=4, edp=2), "has 8 EP ranks, degrees.ep=4"),
    (lambda d: d["degrees"].__setitem__("ep", 4), r"etp\*ep\*edp=4 != tp\*dp=8"),
    (lambda d: d["stages"][0]["layers"].pop(0), "contiguous"),
    (lambda d: d["expert_placement"]["2"][0].__setitem__(0, 40), "uses expert id 40"),
])
def test_bad_plans(mutate, message):
    doc = hand_plan(tp=1, dp=8, ep=8)
    mutate(doc)
    with pytest.raises(InputError, match=message):
        plan_from_doc(doc)


def test_redundancy_inferred_and_missing_layers_dense():
    doc = hand_plan(tp=1, dp=8, ep=8, redundant=8)
    del doc["redundant_experts"], doc["num_experts"]
    del doc["expert_placement"]["7"]
    p = plan_from_doc(doc)
    assert p.experts.redundant == 8 and p.experts.num_experts == 16
    assert p.experts.dense_layers == [7]
    assert any("8 redundant slots inferred" in n for n in p.notes)
    assert any("dense" in n for n in p.notes)


# ---------------------------------------------------------------------------------------------
# Command line


def export_all_via_cli(runner: CliRunner, instance_args: list[str], name: str) -> None:
    for fmt in ("sglang", "vllm", "trtllm", "megatron", "csv"):
        res = runner.invoke(main, ["export", "plan.json", "--to", fmt, "--format", "json"]
                            + instance_args)
        assert res.exit_code == 0, res.output
        doc = json.loads(res.output)
        out = Path("results") / name / f"export-{fmt}"
        assert Path(doc["output_dir"]) == out
        assert sorted(Path(f).name for f in doc["files"]) == sorted(x.name for x in out.iterdir())
        assert not list(out.glob(".*.tmp"))
        if fmt != "csv":
            assert doc["launch"] and (out / "launch.sh").stat().st_mode & 0o100
            subprocess.run(["bash", "-n", str(out / "launch.sh")], check=True)
    res = runner.invoke(main, ["export", "plan.json", "--to", "sglang"])
    assert res.exit_code == 0
    assert f"wrote results/{name}/export-sglang/expert_location.json" in res.output
    assert "python3 -m sglang.launch_server" in res.output


def test_cli_on_hand_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("plan.json").write_text(json.dumps(hand_plan(tp=1, pp=2, dp=8, ep=8, redundant=8, gpn=4)))
    export_all_via_cli(CliRunner(), [], "hand")


def test_cli_on_solved_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["solve", str(INSTANCE), "--gpus", "8", "--output", "plan.json",
                               "--time-limit", "20"])
    assert res.exit_code == 0, res.output
    export_all_via_cli(runner, ["--instance", str(INSTANCE)], "10b_moe")


@pytest.mark.parametrize("args,message", [
    (["nope.json", "--to", "sglang"], "plan nope.json: no such file"),
    (["PLAN", "--to", "trtllm"], "trtllm: attention TP2 x DP4"),
    (["PLAN", "--to", "vllm", "--output", "-"], "give a directory"),
    (["PLAN", "--to", "csv", "--output", "PLAN"], "is not a directory"),
])
def test_cli_errors_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("p.json").write_text(json.dumps(hand_plan(tp=2, dp=4, ep=8)))
    args = ["p.json" if a == "PLAN" else a for a in args]
    res = CliRunner().invoke(main, ["export"] + args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("moeopt:")]
    assert len(lines) == 1 and message in lines[0]


def test_load_plan_from_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(hand_plan()))
    assert load_plan(path).deg.ep == 8


def test_deepseek_trtllm_and_vllm(tmp_path):
    doc = bench_export.deepseek_plan()
    _, ex, out = run_export(doc, "trtllm", tmp_path)
    y = parse_yaml((out / "extra_llm_api_options.yaml").read_text())
    lb = y["moe_config"]["load_balancer"]
    assert sorted(lb["initial_global_assignments"]) == list(range(3, 61)) and lb["num_slots"] == 288
    assert y["tensor_parallel_size"] == 32 and y["enable_attention_dp"] is True
    # without an instance the only warning is that the workload's settings are missing
    assert y["pp_partition"] == [31, 30] and ex.warnings == [missing_warning("trtllm")]
    _, ex, out = run_export(doc, "vllm", tmp_path)
    env, cmds = launch_args(out)
    assert env["VLLM_PP_LAYER_PARTITION"] == "31,30" and len(cmds) == 2
    # vLLM's rank order is DP-major (DP, PP, TP): the plan's stage-major nodes are not kept
    assert any("fills nodes in its own rank order" in w for w in ex.warnings)


def test_plan_layout_other_than_runtime_order_is_a_warning(tmp_path):
    doc = hand_plan(tp=1, dp=8, ep=8)
    for g in doc["gpus"]:                   # EP ranks rotated against the attention DP ranks
        g["ep_rank"] = (g["dp_rank"] + 1) % 8
    _, ex, out = run_export(doc, "sglang", tmp_path)
    assert any("another EP rank than the plan" in w for w in ex.warnings)
    assert "another EP rank" in (out / "README.txt").read_text()
