"""``moeopt export`` of disaggregated plans (a prefill pool and a decode pool).

The exported launch.sh is RUN, once per role and replica (and node of a multi-node replica),
with the runtime programs replaced by a recorder on PATH: what each server would have been
started with (argv, CUDA_VISIBLE_DEVICES, the NIXL side-channel port) is checked against the
layout worked out by hand below, and the router's URLs against the servers that really
started. Settings are checked by hand arithmetic from the pools' serving blocks.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from optimizer.cli.common import load_instance
from optimizer.cli.main import main
from optimizer.output.export import write_export
from optimizer.output.export.disagg import export_disagg
from tests.output.test_export import hand_plan
from tests.output.test_runtime_launch import check_cli, check_llm_args, schema

REPO = Path(__file__).resolve().parents[2]
QWEN_SERVICE = REPO / "instances" / "qwen3_30b_a3b_h200_service.json"
PROGRAMS = ("python3", "vllm", "trtllm-serve", "vllm-router", "srun")
ADDRESSES = ["10.0.0.0", "10.0.0.1", "10.0.0.2"]

RECORDER = """#!{python}
import json, os, sys
keep = ("CUDA_VISIBLE_DEVICES", "VLLM_NIXL_SIDE_CHANNEL_PORT", "NODE_RANK", "ROLE", "REPLICA")
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({{"prog": os.path.basename(sys.argv[0]), "argv": sys.argv[1:],
                        "env": {{k: os.environ[k] for k in keep if k in os.environ}}}}) + "\\n")
"""


def pool_doc(role: str, replicas: int, serving: tuple[int, int], memory_gb: float, **shape) -> dict:
    """One pool: a hand plan of ONE replica (ranks 0..g-1) plus role, replicas, serving."""
    replica = hand_plan(**shape)
    del replica["schema_version"], replica["instance"], replica["status"]
    replica["serving"] = {"max_running_requests": serving[0], "prefill_chunk_tokens": serving[1],
                          "prefill_micro_batches": 1, "decode_micro_batches": 1}
    replica["metrics"] = {"max_memory_gb": memory_gb}
    return {"role": role, "replicas": replicas, **replica}


def disagg_doc(prefill: dict, decode: dict, instance: str = "hand") -> dict:
    total = sum(p["replicas"] * p["num_gpus"] for p in (prefill, decode))
    return {"schema_version": 1, "instance": instance, "status": "feasible", "mode": "disagg",
            "num_gpus": total, "pools": [prefill, decode]}


# (name, plan, expected servers: (role, replica) -> (node, local GPUs or None for whole nodes,
#  nodes of the replica)), the layout by hand: replicas in decreasing size, prefill first at
# equal size, each from the next free global rank; node = rank // 8, local = rank % 8.
CASES = {
    # decode 1 x 8 GPUs at ranks 0-7 (node 0); prefill 2 x 4 at ranks 8-11, 12-15 (node 1)
    "two-nodes": (disagg_doc(pool_doc("prefill", 2, (8, 2048), 60.0, tp=1, dp=4, ep=4),
                             pool_doc("decode", 1, (64, 1024), 70.0, tp=1, dp=8, ep=8)),
                  {("decode", 0): (0, [0, 1, 2, 3, 4, 5, 6, 7], 1),
                   ("prefill", 0): (1, [0, 1, 2, 3], 1), ("prefill", 1): (1, [4, 5, 6, 7], 1)}),
    # decode 1 x 16 GPUs at ranks 0-15 (nodes 0-1); prefill 3 x 2 at ranks 16-17, 18-19, 20-21
    "multi-node-decode": (disagg_doc(pool_doc("prefill", 3, (4, 4096), 50.0, tp=1, dp=2, ep=2),
                                     pool_doc("decode", 1, (32, 512), 70.0, tp=1, dp=16, ep=16,
                                              experts=32)),
                          {("decode", 0): (0, None, 2), ("prefill", 0): (2, [0, 1], 1),
                           ("prefill", 1): (2, [2, 3], 1), ("prefill", 2): (2, [4, 5], 1)}),
}


def qwen_instance(num_gpus: int):
    inst = load_instance(str(QWEN_SERVICE))
    return inst.model_copy(update={"hardware": inst.hardware.model_copy(update={"num_gpus": num_gpus})})


def qwen_pool(role: str, replicas: int, serving, memory_gb: float, **shape) -> dict:
    """A pool of Qwen3-30B-A3B (48 layers, 128 experts), placement contiguous."""
    return pool_doc(role, replicas, serving, memory_gb, layers=48, experts=128, contiguous=True,
                    **shape)


# one 8-GPU node (from the instance; a pool's own GPU list cannot show it): decode 1 x 4 at
# ranks 0-3, prefill 2 x 2 (attention TP2) at ranks 4-5 and 6-7
CASES["one-node"] = (disagg_doc(qwen_pool("prefill", 2, (2, 8192), 40.0, tp=2, dp=1, ep=2),
                                qwen_pool("decode", 1, (16, 256), 45.0, tp=1, dp=4, ep=4),
                                "qwen3_30b_a3b_h200_service"),
                     {("decode", 0): (0, [0, 1, 2, 3], 1), ("prefill", 0): (0, [4, 5], 1),
                      ("prefill", 1): (0, [6, 7], 1)})
INSTANCES = {"one-node": lambda: qwen_instance(8)}


def exported(doc: dict, fmt: str, out: Path, inst=None):
    ex = export_disagg(doc, fmt, out, inst)
    write_export(ex, out)
    return ex


def recorder_path(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in PROGRAMS:
        path = bin_dir / name
        path.write_text(RECORDER.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def run_launch(out: Path, bin_dir: Path, **env) -> list[dict]:
    """Run launch.sh with ``env``; the recorded program calls."""
    record = out / f"record-{len(list(out.glob('record-*')))}.jsonl"
    full = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "MODEL": "m", "RECORD": str(record),
            **{k: str(v) for k, v in env.items()}}
    res = subprocess.run(["bash", str(out / "launch.sh")], env=full, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def opts(argv: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    i = 0
    while i < len(argv):
        if argv[i].startswith("-"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                out[argv[i]] = argv[i + 1]
                i += 2
                continue
            out[argv[i]] = True
        i += 1
    return out


def server_gpus(fmt: str, call: dict) -> int:
    """GPUs one recorded server call starts on its node, from the runtime's degree flags."""
    o = opts(call["argv"])
    if fmt == "sglang":
        return int(o["--tp-size"]) * int(o.get("--pp-size", 1))      # the whole replica
    if fmt == "vllm":
        return int(o["-tp"]) * int(o["-pp"]) * int(o.get("--data-parallel-size-local", o["-dp"]))
    if call["prog"] == "srun":
        assert int(o["--ntasks"]) == int(o["--tp_size"]) * int(o["--pp_size"])
    return int(o["--tp_size"]) * int(o["--pp_size"])


def ports(fmt: str, call: dict) -> list[int]:
    o = opts(call["argv"])
    names = {"sglang": ["--port", "--disaggregation-bootstrap-port", "--engine-info-bootstrap-port"],
             "vllm": ["--port", "--data-parallel-rpc-port"], "trtllm": ["--port"]}[fmt]
    out = [int(o[n]) for n in names if n in o]
    if fmt == "vllm":   # the NIXL side channel: base + DP rank, one port per DP rank
        dp = int(o["-dp"])
        base = int(call["env"]["VLLM_NIXL_SIDE_CHANNEL_PORT"])
        out += list(range(base, base + dp))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fmt", ["sglang", "vllm", "trtllm"])
def test_every_replica_launches_its_pool_gpus_and_the_router_finds_them(case, fmt, tmp_path):
    doc, layout = CASES[case]
    out = tmp_path / "out"
    exported(doc, fmt, out, INSTANCES.get(case, lambda: None)())
    bin_dir = recorder_path(tmp_path)
    pools = {p["role"]: p for p in doc["pools"]}
    servers: dict[tuple[str, int], dict] = {}
    used_ports: dict[int, list[int]] = {}
    for (role, k), (node, local, nodes) in sorted(layout.items()):
        calls = []
        for node_rank in range(nodes):
            env = {"ROLE": role, "REPLICA": k}
            if nodes > 1:
                env.update(NODE_RANK=node_rank, HEAD_ADDR=ADDRESSES[node])
            got = run_launch(out, bin_dir, **env)
            assert len(got) == 1, got
            calls.append(got[0])
        g = pools[role]["num_gpus"]
        per_call = [server_gpus(fmt, c) for c in calls]
        if fmt == "vllm" and nodes > 1:
            assert sum(per_call) == g, per_call            # one command per node
        else:
            assert per_call[0] == g, per_call              # the replica's world, every node alike
        call = calls[0]
        if local is None:
            assert "CUDA_VISIBLE_DEVICES" not in call["env"]
        else:
            assert call["env"]["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, local))
        o = opts(call["argv"])
        if fmt == "sglang":
            assert o["--disaggregation-mode"] == role
            assert o["--disaggregation-transfer-backend"] == "nixl"
            assert ("--disaggregation-bootstrap-port" in o) == (role == "prefill")
        elif fmt == "vllm":
            config = json.loads(o["--kv-transfer-config"])
            assert config == {"kv_connector": "NixlConnector",
                              "kv_role": "kv_producer" if role == "prefill" else "kv_consumer"}
        else:
            y = yaml.safe_load(Path(o["--extra_llm_api_options"]).read_text())
            assert y["cache_transceiver_config"]["backend"] == "NIXL"
            assert y.get("disable_overlap_scheduler", False) == (role == "prefill")
            assert Path(o["--extra_llm_api_options"]).parent.name == role
        for n in range(node, node + nodes):
            used_ports.setdefault(n, []).extend(ports(fmt, call))
        servers[(role, k)] = {"addr": ADDRESSES[node], "port": int(o["--port"]),
                              "bootstrap": o.get("--disaggregation-bootstrap-port")}
    for n, ps in used_ports.items():   # servers sharing a node never share a port
        assert len(ps) == len(set(ps)), (n, sorted(ps))
    nodes_needed = max(node + nodes for node, _, nodes in layout.values())
    got = run_launch(out, bin_dir, ROLE="router", NODES=" ".join(ADDRESSES[:nodes_needed]))
    want = {role: sorted(f"http://{s['addr']}:{s['port']}" for (r, _), s in servers.items() if r == role)
            for role in ("prefill", "decode")}
    if fmt == "trtllm":
        y = yaml.safe_load((out / "disagg_config.resolved.yaml").read_text())
        assert sorted("http://" + u for u in y["context_servers"]["urls"]) == want["prefill"]
        assert sorted("http://" + u for u in y["generation_servers"]["urls"]) == want["decode"]
        assert y["context_servers"]["num_instances"] == pools["prefill"]["replicas"]
        assert got[0]["argv"] == ["disaggregated", "-c", str(out / "disagg_config.resolved.yaml")]
        return
    argv = got[0]["argv"]
    prefill = [argv[i + 1] for i, w in enumerate(argv) if w == "--prefill"]
    decode = [argv[i + 1] for i, w in enumerate(argv) if w == "--decode"]
    assert sorted(prefill) == want["prefill"] and sorted(decode) == want["decode"]
    if fmt == "sglang":   # each prefill URL carries its server's bootstrap port
        boots = {argv[i + 1]: argv[i + 2] for i, w in enumerate(argv) if w == "--prefill"}
        for (role, _), s in servers.items():
            if role == "prefill":
                assert boots[f"http://{s['addr']}:{s['port']}"] == s["bootstrap"]


def qwen_doc() -> dict:
    """Qwen3-30B-A3B on H200 (141 GiB): prefill 2 x (TP1 DP4 EP4), decode 1 x (TP1 DP8 EP8)."""
    return disagg_doc(qwen_pool("prefill", 2, (8, 8192), 90.0, tp=1, dp=4, ep=4),
                      qwen_pool("decode", 1, (256, 4096), 130.0, tp=1, dp=8, ep=8),
                      "qwen3_30b_a3b_h200_service")


def test_pool_settings_by_hand(tmp_path):
    inst = qwen_instance(16)
    doc = qwen_doc()
    # the instance: prompts and outputs bounded at 5000 tokens together; BF16 KV (the model's
    # own type: no KV-dtype flag, the runtime's default)
    assert inst.model.kv_dtype == "bf16"
    s = exported(doc, "sglang", tmp_path / "s", inst)
    pre, dec = (p["settings"] for p in s.pools)
    # SGLang divides the running cap and the chunk by the DP-attention size: prefill 8 x 4 = 32,
    # 8192 x 4 = 32768; decode 256 x 8 = 2048, 4096 x 8 = 32768
    assert (pre["max_running_requests"], pre["chunked_prefill_size"]) == (32, 32768)
    assert (dec["max_running_requests"], dec["chunked_prefill_size"]) == (2048, 32768)
    # memory fraction of the H200's 141 GiB = 151.397 GB: 90 / 151.397 = 0.5945 -> 0.60;
    # 130 / 151.397 = 0.8587 -> 0.86 (rounded up)
    assert (pre["mem_fraction_static"], dec["mem_fraction_static"]) == (0.6, 0.86)
    assert pre["context_length"] == dec["context_length"] == 5000
    assert "kv_cache_dtype" not in pre and "kv_cache_dtype" not in dec
    assert (pre["tp"], pre["ep"], dec["tp"], dec["ep"]) == (4, 4, 8, 8)
    v = exported(doc, "vllm", tmp_path / "v", inst)
    pre, dec = (p["settings"] for p in v.pools)
    # vLLM per engine (one DP rank): 8 sequences, 8192 tokens; decode 256, max(4096, 256) = 4096
    assert (pre["max_num_seqs"], pre["max_num_batched_tokens"]) == (8, 8192)
    assert (dec["max_num_seqs"], dec["max_num_batched_tokens"]) == (256, 4096)
    assert (pre["gpu_memory_utilization"], dec["gpu_memory_utilization"]) == (0.6, 0.86)
    t = exported(doc, "trtllm", tmp_path / "t", inst)
    pre, dec = (p["settings"] for p in t.pools)
    assert (pre["max_batch_size"], pre["max_num_tokens"], pre["max_seq_len"]) == (8, 8192, 5000)
    assert (dec["max_batch_size"], dec["max_num_tokens"]) == (256, 4096)
    # the transfer buffer holds one whole request's context: 5000 tokens
    assert pre["cache_transceiver_config"] == {"backend": "NIXL", "max_tokens_in_buffer": 5000}
    assert pre["disable_overlap_scheduler"] is True and "disable_overlap_scheduler" not in dec
    readme = (tmp_path / "t" / "README.txt").read_text()
    assert "prefill         2             4" in readme and "decode          1             8" in readme


@pytest.mark.parametrize("fmt", ["sglang", "vllm", "trtllm"])
def test_every_pool_flag_is_in_the_runtime_schema(fmt, tmp_path):
    checked = 0
    for name, (doc, _) in CASES.items():
        out = tmp_path / name
        exported(doc, fmt, out, INSTANCES.get(name, lambda: None)())
        text = (out / "launch.sh").read_text().replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(("python3 -m sglang.launch_server", "vllm serve", "trtllm-serve \"",
                                "srun")):
                check_cli(fmt, shlex.split(line))
                checked += 1
        if fmt == "trtllm":
            for role in ("prefill", "decode"):
                y = yaml.safe_load((out / role / "extra_llm_api_options.yaml").read_text())
                check_llm_args(schema("trtllm")["llm_args"], y, "")
            config = yaml.safe_load((out / "disagg_config.yaml").read_text())
            check_disagg_config(schema("trtllm")["disagg_config"], config, "")
    assert checked >= 6


def check_disagg_config(fields: dict, doc: dict, where: str) -> None:
    """The disaggregated-serving YAML against the keys extract_disagg_cfg takes (fixture)."""
    for key, value in doc.items():
        assert key in fields, f"trtllm disaggregated config has no key {where}{key}"
        spec = fields[key]
        if spec["type"] == "object":
            check_disagg_config(spec["fields"], value, f"{where}{key}.")
        elif spec["type"] == "int":
            assert isinstance(value, int) and value >= spec.get("min", value), where + key
        elif spec["type"] == "str":
            assert isinstance(value, str) and value in spec.get("choices", [value]), where + key
        else:   # list[host:port]: urls.split(':') must give exactly a host and an integer port
            assert all(len(u.split(":")) == 2 and u.split(":")[1].isdigit() for u in value), value
    for section in ("context_servers", "generation_servers"):
        if section in doc:
            assert len(doc[section]["urls"]) == doc[section]["num_instances"], section


def test_disagg_config_checker_catches_a_wrong_key():
    fields = schema("trtllm")["disagg_config"]
    with pytest.raises(AssertionError):
        check_disagg_config(fields, {"context_servers": {"num_instances": 2, "urls": ["a:1"]}}, "")
    with pytest.raises(AssertionError):
        check_disagg_config(fields, {"ctx_servers": {}}, "")


def test_megatron_refuses_a_disaggregated_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("p.json").write_text(json.dumps(CASES["two-nodes"][0]))
    res = CliRunner().invoke(main, ["export", "p.json", "--to", "megatron", "--output", "out"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "disaggregated" in lines[0] and "Megatron" in lines[0]
    assert not Path("out").exists()


def test_a_pool_replica_with_edp_copies_exits_2(tmp_path, monkeypatch):
    """EP4 over DP8: two expert-data-parallel copies inside one replica = two servers; a pool
    replica must be one server (its copies are the pool's replicas)."""
    monkeypatch.chdir(tmp_path)
    doc = disagg_doc(pool_doc("prefill", 1, (4, 2048), 50.0, tp=1, dp=8, ep=4),
                     pool_doc("decode", 1, (32, 512), 60.0, tp=1, dp=8, ep=8))
    Path("p.json").write_text(json.dumps(doc))
    for fmt in ("sglang", "vllm", "trtllm"):
        res = CliRunner().invoke(main, ["export", "p.json", "--to", fmt, "--output", "out"])
        assert res.exit_code == 2, res.output
        assert "pools[0] (prefill).degrees.edp=2" in res.output
    assert not Path("out").exists()


def test_cli_json_lists_the_pools_and_csv_writes_one_file_per_pool(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("p.json").write_text(json.dumps(CASES["two-nodes"][0]))
    res = CliRunner().invoke(main, ["export", "p.json", "--to", "sglang", "--output", "o",
                                    "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [(p["role"], p["replicas"], p["gpus_per_replica"]) for p in doc["pools"]] == [
        ("prefill", 2, 4), ("decode", 1, 8)]
    assert doc["variables"] == ["ROLE", "REPLICA", "MODEL", "NODES"]
    assert doc["instances"] == 3 and doc["gpus_per_instance"] is None   # 2 + 1 servers
    assert sorted(Path("o").rglob("expert_location.json")) == [
        Path("o/decode/expert_location.json"), Path("o/prefill/expert_location.json")]
    res = CliRunner().invoke(main, ["export", "p.json", "--to", "csv", "--output", "c"])
    assert res.exit_code == 0, res.output
    rows = Path("c/prefill/gpus.csv").read_text().splitlines()
    assert len(rows) == 1 + 4                 # header + the 4 GPUs of one prefill replica
    assert len(Path("c/decode/gpus.csv").read_text().splitlines()) == 1 + 8


def test_layout_matches_the_pool_reader(tmp_path):
    """The hand layout of CASES agrees with optimizer.plan.pools.replica_first_ranks (the
    rule the planner and simulator use), so the launches sit where the plan's figures do."""
    from optimizer.plan.pools import replica_first_ranks
    for doc, layout in CASES.values():
        sizes = {p["role"]: (p["replicas"], p["num_gpus"]) for p in doc["pools"]}
        firsts = replica_first_ranks(sizes)
        for (role, k), (node, local, _) in layout.items():
            assert firsts[role][k] // 8 == node
            assert firsts[role][k] % 8 == (local[0] if local else 0)



# ----------------------------------------------------------------------------------------------
# The runtimes' and routers' own parsers (throwaway environments of .ci/runtime-parsers)


def router_python(runtime: str) -> str:
    from optimizer.output.export.disagg import ROUTER_VERSIONS
    package, pinned = ROUTER_VERSIONS[runtime]
    python = os.environ.get("MOEOPT_ROUTER_PYTHON")
    if not python:
        pytest.skip(f"MOEOPT_ROUTER_PYTHON not set: run .ci/runtime-parsers to build the "
                    f"throwaway environment with {package} {pinned}")
    probe = subprocess.run([python, "-c", f"from importlib.metadata import version; "
                            f"print(version({package!r}))"], capture_output=True, text=True)
    if probe.returncode or probe.stdout.strip() != pinned:
        pytest.skip(f"{package} {pinned} not installed in {python}")
    return python


def recorded_launches(fmt: str, tmp_path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """(server argvs after the program words, router argvs) of every case, from launch.sh
    runs with the recorder (ports and addresses as the script computes them)."""
    bin_dir = recorder_path(tmp_path)
    servers, routers = [], []
    for name, (doc, layout) in CASES.items():
        out = tmp_path / f"{fmt}-{name}"
        exported(doc, fmt, out, INSTANCES.get(name, lambda: None)())
        for (role, k), (node, _, nodes) in sorted(layout.items()):
            env = {"ROLE": role, "REPLICA": k}
            if nodes > 1:
                env.update(NODE_RANK=0, HEAD_ADDR=ADDRESSES[node])
            call = run_launch(out, bin_dir, **env)[0]
            argv = call["argv"]
            servers.append(argv[2:] if fmt == "sglang" else argv[1:])   # -m module | serve
        nodes_needed = max(node + nodes for node, _, nodes in layout.values())
        call = run_launch(out, bin_dir, ROLE="router", NODES=" ".join(ADDRESSES[:nodes_needed]))[0]
        routers.append(call["argv"][2:] if fmt == "sglang" else call["argv"])
    return servers, routers


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["sglang", "vllm"])
def test_runtime_parser_accepts_every_pool_launch(fmt, tmp_path):
    from tests.output.test_runtime_parsers import parsed, runtime_python
    python = runtime_python(fmt)
    servers, _ = recorded_launches(fmt, tmp_path)
    results = parsed(python, fmt, servers, tmp_path)
    assert len(results) == len(servers) >= 8
    for argv, ns in zip(servers, results):
        o = opts(argv)
        if fmt == "sglang":
            assert ns["disaggregation_mode"] == o["--disaggregation-mode"]
            assert ns["disaggregation_transfer_backend"] == "nixl"
            assert ns["port"] == int(o["--port"])
        else:
            config = ns["kv_transfer_config"]
            assert (config["kv_connector"], config["kv_role"]) == tuple(
                json.loads(o["--kv-transfer-config"]).values())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["sglang", "vllm"])
def test_router_parser_accepts_every_router_launch(fmt, tmp_path):
    python = router_python(fmt)
    _, routers = recorded_launches(fmt, tmp_path)
    path = tmp_path / "routers.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in routers))
    res = subprocess.run([python, str(REPO / "tests" / "tools" / "router_parser.py"), fmt, str(path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    results = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(results) == len(routers) == len(CASES)
    for argv, got in zip(routers, results):
        assert got["pd_disaggregation"] and got["port"] == 8000
        prefill = [argv[i + 1] for i, w in enumerate(argv) if w == "--prefill"]
        decode = [argv[i + 1] for i, w in enumerate(argv) if w == "--decode"]
        assert [u for u, _ in got["prefill_urls"]] == prefill and got["decode_urls"] == decode
        if fmt == "sglang":   # every prefill URL with its bootstrap port
            assert all(isinstance(b, int) for _, b in got["prefill_urls"])
