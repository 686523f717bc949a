"""The simulator against closed forms worked by hand, Little's law, KV pressure, and the
command line (bad input is one line with exit 2)."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from optimizer.cli.main import main
from optimizer.costs.layout import Degrees
from optimizer.costs.step_time import step_batch, step_ns
from optimizer.costs.tables import LinkFacts
from optimizer.costs.units import LOAD_SCALE
from optimizer.inputs.schema import Instance
from optimizer.inputs.service import Requests, make_requests
from optimizer.simulate.deployment import deployment
from optimizer.simulate.engine import simulate
from optimizer.simulate.summary import summarize

ONE_GPU = Degrees(tp=1, pp=1, dp=1, ep=1, etp=1, edp=1, micro_batches=1)
NO_LINKS = LinkFacts(0, 0, False, False, False)
LAYERS = [(0, 1)]
HOT = {0: LOAD_SCALE, 1: LOAD_SCALE}
CONTRACT_KEYS = {"ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_ms", "tpot_p90_ms", "e2e_p90_s",
                 "goodput_rps", "slo_attainment", "peak_kv_fraction", "preemptions", "requests"}


def tiny_doc(memory_gb: float = 1.0, num_gpus: int = 1, **workload) -> dict:
    """2 MoE layers, h = 64, 4 x 16 heads, 4 experts top-2, FP16 (512 KV bytes per token);
    GPUs of 1 TFLOP/s and 100 GB/s with nothing reserved."""
    return {"name": "tiny",
            "model": {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                      "num_kv_heads": 4, "head_dim": 16, "num_experts": 4, "top_k": 2,
                      "expert_ffn_size": 128, "vocab_size": 100},
            "hardware": {"num_gpus": num_gpus, "gpu": {"peak_tflops": 1.0, "memory_gb": memory_gb,
                                                       "hbm_bandwidth_gb_s": 100.0,
                                                       "compute_efficiency": 1.0, "hbm_efficiency": 1.0},
                         "intra_node_bandwidth_gb_s": 100.0, "inter_node_bandwidth_gb_s": 10.0,
                         "nccl_buffer_gb": 0.0, "runtime_reserve_gb": 0.0},
            "workload": workload or {"kind": "service", "arrival_rate_rps": 1.0,
                                     "prompt_tokens": 100, "output_tokens": 5},
            "requirements": {"max_ttft_s": 0.001, "max_tpot_ms": 0.005}}


def plan_doc(cap: int, chunk: int, dp: int = 1) -> dict:
    return {"degrees": {"tp": 1, "pp": 1, "dp": dp, "ep": 1, "etp": 1, "edp": dp},
            "serving": {"max_running_requests": cap, "prefill_chunk_tokens": chunk}}


def tiny_deployment(cap: int, chunk: int, **kw):
    inst = Instance.model_validate(tiny_doc(**kw))
    return inst, deployment(inst, plan_doc(cap, chunk), {})


def hand_step(chunks, contexts) -> int:
    inst = Instance.model_validate(tiny_doc())
    return step_ns(inst, ONE_GPU, NO_LINKS, LAYERS, HOT, step_batch(inst, chunks, contexts))


def test_isolated_requests_take_exactly_their_steps():
    """Arrivals 1 s apart, far longer than a request's service (~50 us): every request
    finds the replica idle. Prompt 100 with a 32-token budget runs 4 chunks, (0,32),
    (32,32), (64,32), (96,4 ending the prompt: first token); then 4 decode steps at
    contexts 101..104 give tokens 2..5. TTFT = the 4 chunk steps, TPOT = their mean."""
    inst, dep = tiny_deployment(cap=8, chunk=32)
    reqs = Requests(np.full(5, 100), np.full(5, 5), np.arange(1.0, 6.0))
    out = simulate(dep, reqs)
    ttft = sum(hand_step([(s, n, s + n == 100)], []) for s, n in [(0, 32), (32, 32), (64, 32), (96, 4)])
    decode = [hand_step([], [c]) for c in (101, 102, 103, 104)]
    assert (out.first_token_ns - out.arrival_ns).tolist() == [ttft] * 5
    assert (out.finish_ns - out.first_token_ns).tolist() == [sum(decode)] * 5
    summary = summarize(out, inst.requirements, 0.0)
    assert summary["ttft_p90_s"] == ttft / 1e9
    assert summary["tpot_p50_ms"] == pytest.approx(sum(decode) / 4 / 1e6, rel=1e-12)
    assert summary["preemptions"] == 0 and summary["requests"] == 5


def test_saturated_prefill_runs_at_the_step_budget_bound():
    """400 prompt-only requests (64 tokens, 1 output token) all at t = 0, budget 256 tokens,
    cap 8: every step carries exactly 4 whole prompts, so the last request completes after
    100 steps of step_ns(4 x (0, 64)) and throughput is 4 requests per step: the budget
    bound C / P requests per step time."""
    _, dep = tiny_deployment(cap=8, chunk=256)
    out = simulate(dep, Requests(np.full(400, 64), np.full(400, 1), np.zeros(400)))
    step = hand_step([(0, 64, True)] * 4, [])
    assert out.finish_ns.max() == 100 * step
    assert sorted(set(out.finish_ns.tolist())) == [k * step for k in range(1, 101)]
    assert out.steps == 100


def test_saturated_decode_is_capped_by_running_requests():
    """8 requests (prompt 16, output 11) at t = 0, cap 4, budget 64: the first 4 are
    prefilled in one step (4 x 16 = 64 tokens), then decode together 10 steps at contexts
    17..26; the next 4 are admitted as the first leave, and repeat. Completion of the
    last = 2 x (prefill step + the 10 decode steps)."""
    _, dep = tiny_deployment(cap=4, chunk=64)
    out = simulate(dep, Requests(np.full(8, 16), np.full(8, 11), np.zeros(8)))
    batch_time = hand_step([(0, 16, True)] * 4, []) + sum(hand_step([], [c] * 4) for c in range(17, 27))
    assert out.finish_ns.max() == 2 * batch_time
    assert sorted(out.finish_ns.tolist()) == [batch_time] * 4 + [2 * batch_time] * 4


@pytest.mark.slow
def test_littles_law_on_the_simulated_output():
    """Poisson arrivals at 8,000 requests/s (about 60 % of the tiny replica's capacity),
    lognormal lengths. The time-average number in the system, sampled from the output at
    2,000 instants, equals the configured rate times the mean time in the system within
    sampling error (5 %)."""
    inst = Instance.model_validate(tiny_doc(workload=None) | {"workload": {
        "kind": "service", "arrival_rate_rps": 8000.0,
        "prompt_tokens": {"kind": "lognormal", "mean_tokens": 60, "sigma": 0.6},
        "output_tokens": {"kind": "lognormal", "mean_tokens": 20, "sigma": 0.6}}})
    dep = deployment(inst, plan_doc(64, 512), {})
    out = simulate(dep, make_requests(inst.workload, 6000, seed=5))
    start, end = out.arrival_ns[600] / 1e9, out.arrival_ns[-600] / 1e9
    rng = np.random.default_rng(0)
    instants = rng.uniform(start, end, 2000) * 1e9
    in_system = [np.count_nonzero((out.arrival_ns <= t) & (out.finish_ns > t)) for t in instants]
    inside = (out.arrival_ns >= start * 1e9) & (out.arrival_ns <= end * 1e9)
    mean_time_s = ((out.finish_ns - out.arrival_ns)[inside] / 1e9).mean()
    assert np.mean(in_system) == pytest.approx(8000.0 * mean_time_s, rel=0.05)


def test_kv_pressure_preempts_and_still_completes():
    """KV for about 2,000 tokens (2.2 MB of memory minus ~0.36 MB of weights and ~0.82 MB
    of activations of a 512-token step, over 512 B per token) and 40 requests of 200 + 200
    tokens at once, cap 40: decodes outgrow the cache, the newest are preempted and
    recomputed, and every request still completes."""
    inst, dep = tiny_deployment(cap=40, chunk=512, memory_gb=0.0022)
    assert 1500 < dep.kv_capacity_tokens < 2500
    out = simulate(dep, Requests(np.full(40, 200), np.full(40, 200), np.zeros(40)))
    summary = summarize(out, inst.requirements, 0.0)
    assert summary["preemptions"] > 0 and (out.finish_ns > 0).all()
    assert 0.9 < summary["peak_kv_fraction"] <= 1.0


def test_routing_over_two_replicas():
    """200 requests at t = 0: both policies alternate (least-loaded: the emptier replica,
    lowest index on ties), 100 each; spaced 1 s apart, least-loaded always finds both idle
    and picks replica 0, round-robin still alternates."""
    inst = Instance.model_validate(tiny_doc(num_gpus=2))
    dep = deployment(inst, plan_doc(8, 64, dp=2), {})
    burst = Requests(np.full(200, 30), np.full(200, 3), np.zeros(200))
    spaced = Requests(np.full(200, 30), np.full(200, 3), np.arange(200.0))
    assert np.bincount(simulate(dep, burst, "least-loaded").replica).tolist() == [100, 100]
    assert np.bincount(simulate(dep, burst, "round-robin").replica).tolist() == [100, 100]
    assert np.bincount(simulate(dep, spaced, "least-loaded").replica, minlength=2).tolist() == [200, 0]
    assert simulate(dep, spaced, "round-robin").replica.tolist() == [0, 1] * 100


# ---------------------------------------------------------------- command line
def write(tmp_path: Path, instance: dict, plan: dict | None = None) -> tuple[str, str]:
    (tmp_path / "inst.json").write_text(json.dumps(instance))
    (tmp_path / "plan.json").write_text(json.dumps(plan or {"degrees": {"tp": 1}}))
    return str(tmp_path / "inst.json"), str(tmp_path / "plan.json")


def test_cli_writes_json_and_png(tmp_path):
    inst, plan = write(tmp_path, tiny_doc())
    out = tmp_path / "out" / "sim.json"
    res = CliRunner().invoke(main, ["simulate", inst, plan, "--requests", "300", "--format", "json",
                                    "--output", str(out), "--max-running-requests", "16",
                                    "--prefill-chunk-tokens", "128"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert CONTRACT_KEYS <= set(doc) and doc["requests"] == 270  # 10 % warm-up
    assert (doc["max_running_requests"], doc["prefill_chunk_tokens"]) == (16, 128)
    assert json.loads(out.read_text()) == doc
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("rows, expected", [
    ("0,10,2\n1,-4,3\n", "prompt_tokens=-4"),
    ("2,10,2\n1,4,3\n", "arrival_s=1 is before the previous"),
    (None, "no rows"),
])
def test_cli_bad_trace_is_one_line_exit_2(tmp_path, rows, expected):
    text = "" if rows is None else "arrival_s,prompt_tokens,output_tokens\n" + rows
    (tmp_path / "t.csv").write_text(text)
    inst, plan = write(tmp_path, tiny_doc(workload=None) | {"workload": {"kind": "service", "trace": "t.csv"}})
    res = CliRunner().invoke(main, ["simulate", inst, plan, "--output", str(tmp_path / "o.json")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and expected in lines[0], res.output
    assert lines[0].startswith("moeopt: workload.trace ") and not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("plan, args, expected", [
    ({"degrees": {"tp": 3}}, [], "plan: breaks the rule"),
    ({"degrees": {"tp": 1}, "serving": {"max_running_requests": 0}}, [], "plan max_running_requests=0"),
    ({"degrees": {"tp": 1}}, ["--max-running-requests", "64", "--prefill-chunk-tokens", "32"],
     "prefill_chunk_tokens=32 < max_running_requests=64"),
])
def test_cli_bad_plan_or_knobs_exit_2(tmp_path, plan, args, expected):
    inst, plan_path = write(tmp_path, tiny_doc(), plan)
    res = CliRunner().invoke(main, ["simulate", inst, plan_path, "--output", str(tmp_path / "o.json"), *args])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and expected in lines[0], res.output


def test_simulator_never_imports_the_planner_formulas():
    """Independence: no import statement under optimizer/simulate names the planner's
    serving model (optimizer.costs.serving) or the solver."""
    import ast
    root = Path(__file__).resolve().parents[2] / "optimizer" / "simulate"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("optimizer.costs.serving", "optimizer.cpsat", "ortools")), (path, name)


def test_closed_loop_of_one_user_runs_requests_back_to_back():
    """concurrency = 1: each request is sent when the previous one completes, so request i
    completes at (i + 1) x (its 4 chunk steps + 4 decode steps), as in the isolated case."""
    inst = Instance.model_validate(tiny_doc(workload=None) | {"workload": {
        "kind": "service", "concurrency": 1, "prompt_tokens": 100, "output_tokens": 5}})
    dep = deployment(inst, plan_doc(8, 32), {})
    out = simulate(dep, make_requests(inst.workload, 6, seed=0))
    one = (sum(hand_step([(s, n, s + n == 100)], []) for s, n in [(0, 32), (32, 32), (64, 32), (96, 4)])
           + sum(hand_step([], [c]) for c in (101, 102, 103, 104)))
    assert out.finish_ns.tolist() == [(i + 1) * one for i in range(6)]
    assert out.arrival_ns.tolist() == [i * one for i in range(6)]
