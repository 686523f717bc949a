"""Public measurements of real DeepSeek-V3 deployments beside moeopt's cost model.

    python -m benchmarks.bench_public [--json OUT]

Each published figure below was read in its source (the quoted text is kept with it) and is
rebuilt as one moeopt instance and one fixed plan (PP 1, TP 1, attention DP = EP = the GPUs,
ETP 1, contiguous experts, balanced routing, one micro-batch), evaluated with the preset's
fitted hardware profile (``h100-sxm``; docs/calibration.md). moeopt's figure follows the
source's definition:

- prefill: input tokens per second per node = 8 x (tokens per GPU of one forward pass) / TTFT,
  TTFT being the whole batch prefilled in one pass (``evaluate``);
- decode: output tokens per second per node = 8 x (sequences per GPU) / TPOT, TPOT one decode
  step at the stated mean KV length (``prompt_tokens`` = KV - 1 and one output token make
  moeopt's mean decode context, s + (D + 1) / 2, equal the KV length);
- DeepEP low-latency kernels: dispatch + combine of one MoE layer in microseconds = the
  decode step's ``moe_communication`` operator (``moeopt explain``) / the 58 MoE layers, at
  the stated 128 tokens per rank.

Besides moeopt's serial figure (every operator one after another, which is what its cost model
predicts) the table shows the figure with the MoE all-to-all fully hidden behind compute
(explain's total minus ``moe_communication``): the sources overlap it with two micro-batches
(DeepSeek's dual-batch overlap, SGLang's TBO), which moeopt does not model.

Hardware: H100 SXM preset and profile. H800 (DeepSeek's own figures) = H100 compute and HBM
with NVLink cut to 400 GB/s bidirectional, i.e. 200 GB/s per direction in moeopt's
convention (``intra_node_bandwidth_gb_s``); one 400 Gb/s ConnectX-7 NIC per GPU = 50 GB/s on
both. The profile's intra-node all-to-all curves were fitted on H100 and are applied to the
H800's slower NVLink unchanged (an assumption). Model: tests/fixtures/hf/deepseek_v3.json, FP8
weights, BF16 KV cache (the sources run MLA in BF16).

Stand-ins (the cost tables need EP to divide the 256 experts, so 32 redundant experts are not
expressible, docs/calibration.md §C5): EP 144 with 288 expert slots (18 nodes) is rebuilt as
EP 128 (16 nodes) and EP 72 with 288 slots (9 nodes) as EP 64 (8 nodes). Per GPU the two hold
the same number of experts (2 and 4) and, under balanced routing, receive the same routed rows
(B·k·EP/(E+R) = 128·8·144/288 = 512 = 128·8·128/256), so the per-node figures are comparable;
the all-to-all has fewer peers. EP 32 with 288 slots keeps EP 32 (8 experts per GPU instead of
9; the same routed rows per GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.inputs.hf import model_from_hf_config
from optimizer.inputs.schema import Instance
from optimizer.plan.evaluate import Plan, evaluate
from optimizer.plan.explain import explain
from optimizer.plan.files import even_stages

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "hf"
GPUS_PER_NODE = 8
H800_NVLINK_GB_S = 200.0  # 400 GB/s bidirectional, per direction

DEEPSEEK_DAY6 = ("https://github.com/deepseek-ai/open-infra-index/blob/main/202502OpenSourceWeek/"
                 "day_6_one_more_thing_deepseekV3R1_inference_system_overview.md")
SGLANG_BLOG = "https://lmsys.org/blog/2025-05-05-large-scale-ep/"
DEEPEP_LEGACY = "https://github.com/deepseek-ai/DeepEP/blob/main/docs/legacy.md#performance"
VLLM_CI = "https://buildkite.com/vllm/performance-benchmark/builds/9515"
VLLM_TESTS = ("https://github.com/vllm-project/vllm/blob/main/.buildkite/nightly-benchmarks/tests/"
              "latency-tests.json")


@dataclass(frozen=True)
class Scenario:
    """One published figure and the moeopt instance that rebuilds it.

    kind: prefill (input tok/s/node), decode (output tok/s/node), deepep (dispatch + combine
    us per MoE layer) or latency (end-to-end ms of a static batch). ``tokens``: the prompt
    length (prefill, latency) or the mean KV length (decode, deepep)."""

    kind: str
    name: str
    source: str
    url: str
    gpu: str  # H100, H800 or H200
    gpus: int  # in moeopt (the EP degree for DeepSeek-V3)
    seqs_per_gpu: int  # latency: the whole batch
    tokens: int
    published: float
    quote: str  # the source's own words, as read
    notes: str
    fixture: str = "deepseek_v3"
    output_tokens: int = 1  # latency only
    tp: int = 1  # latency only: tensor parallel, experts sharded over it (vLLM's default)


UNITS = {"prefill": "input tok/s/node", "decode": "output tok/s/node", "deepep": "us/MoE layer",
         "latency": "ms end-to-end"}

SCENARIOS = [
    Scenario("prefill", "deepseek_service_prefill", "DeepSeek day-6 overview (as tabulated by SGLang)",
             DEEPSEEK_DAY6, "H800", 32, 4, 4096, 32_206,
             'DeepSeek: "Each H800 node delivers an average throughput of ~73.7k tokens/s input (including '
             'cache hits) during prefilling"; "608B, of which 342B tokens (56.3%) hit the on-disk KV cache"; '
             '"Prefilling Phase [Routed Expert EP32, MLA/Shared Expert DP32]: Each deployment unit spans 4 '
             'nodes with 32 redundant routed experts". SGLang\'s table: "DeepSeek Blog (excl. cache hit)" '
             '"Throughput (per node) | 32,206", "Input Length | N/A", "Batch Size | 16,384"',
             "production average, 73.7k x (1 - 0.563); prompt length not published (4,096 assumed as in the "
             "profile), 16,384 tokens per GPU, EP 32 + 32 redundant experts, dual-batch overlap"),
    Scenario("prefill", "deepseek_profile_prefill", "DeepSeek profile-data (as tabulated by SGLang)",
             SGLANG_BLOG, "H800", 32, 4, 4096, 62_713,
             'SGLang: "For prefill, we tested a scenario with 16,384 tokens per device and an input length '
             'of 4,096"; table column "DeepSeek Profile": "Throughput (per node) | ... | 62,713"',
             "EP 32, 4 nodes, 16,384 tokens per GPU of 4,096-token prompts, dual-batch overlap"),
    Scenario("prefill", "sglang_prefill_1k", "SGLang large-scale EP blog", SGLANG_BLOG, "H100", 32, 16, 1024,
             57_674,
             'SGLang: "On 4 nodes (4x8xH100, EP32), the system achieved per-node throughputs of 57,674, '
             '54,543, and 50,302 tokens per second for prompt lengths of 1K, 2K, and 4K, respectively"',
             "EP 32 (+32 redundant, EPLB on a matching distribution), TBO; 16,384 tokens per GPU assumed "
             "(stated for 4K only)"),
    Scenario("prefill", "sglang_prefill_2k", "SGLang large-scale EP blog", SGLANG_BLOG, "H100", 32, 8, 2048,
             54_543, "(the sentence of sglang_prefill_1k)", "as sglang_prefill_1k"),
    Scenario("prefill", "sglang_prefill_4k", "SGLang large-scale EP blog", SGLANG_BLOG, "H100", 32, 4, 4096,
             50_302,
             '(the sentence of sglang_prefill_1k); table "SGLang (Default)": "Batch Size | 16,384", '
             '"Input Length | 4,096", "Throughput (per node) | 50,302"',
             "EP 32, default expert imbalance, TBO"),
    Scenario("prefill", "sglang_prefill_4k_balanced", "SGLang large-scale EP blog", SGLANG_BLOG, "H100", 32, 4,
             4096, 59_337,
             'SGLang table: "SGLang + Simulated Perfect EPLB" "Throughput (per node) | 59,337" '
             '("random expert selection following group-limited routing semantics")',
             "EP 32, balanced routing (moeopt's assumption), TBO"),
    Scenario("decode", "deepseek_service_decode", "DeepSeek day-6 overview", DEEPSEEK_DAY6, "H800", 128, 128,
             4989, 14_800,
             'DeepSeek: "~14.8k tokens/s output during decoding"; "the average kvcache length per output '
             'token was 4,989 tokens"; "Decoding Phase [Routed Expert EP144, MLA/Shared Expert DP144]: '
             'Each deployment unit spans 18 nodes with 32 redundant routed experts". Batch 128 per GPU '
             'from SGLang\'s table ("DeepSeek Blog" "Batch Size | 128", "KV Cache Length | 4,989", '
             '"Number of Nodes | 18", "Throughput (per node) | 14,800")',
             "production average, EP 144 on 18 nodes (moeopt: EP 128 stand-in), 5-stage pipeline overlap, "
             "MTP (SGLang simulates it to match this figure)"),
    Scenario("decode", "deepseek_profile_decode", "DeepSeek profile-data (as tabulated by SGLang)",
             SGLANG_BLOG, "H800", 128, 128, 4096, 18_598,
             'SGLang decode table, column "DeepSeek Profile": "Batch Size | 128", "KV Cache Length | '
             '4,096", "Number of Nodes | 16", "Throughput (per node) | 18,598"',
             "EP 128 on 16 nodes, overlap, MTP"),
    Scenario("decode", "sglang_decode_2k", "SGLang large-scale EP blog", SGLANG_BLOG, "H100", 64, 256, 2000,
             22_282,
             'SGLang: "Evaluated on 9 nodes (9x8xH100, EP72; half the scale of DeepSeek), the system '
             'achieved 22,282 tokens/sec per node for 2K inputs"; table "SGLang (Default)": "Batch Size | '
             '256", "KV Cache Length | 2,000", "Number of Nodes | 9"',
             "EP 72 + 32 redundant on 9 nodes (moeopt: EP 64 on 8 nodes), no MTP, TBO; 256 tokens per "
             "rank on DeepEP low-latency (moeopt prices > 128 as DeepEP normal)"),
]

# DeepEP low-latency kernels, H800 + CX7 400 Gb/s, 128 tokens per rank, hidden 7168, top-8, FP8
# dispatch / BF16 combine. EP -> (dispatch us, combine us), legacy.md's table.
DEEPEP_LL_US = {8: (77, 114), 16: (118, 195), 32: (155, 273), 64: (173, 314), 128: (192, 369), 256: (194, 360)}
DEEPEP_QUOTE = ('DeepEP: "We test low-latency kernels on H800 with each connected to a CX7 InfiniBand '
                '400 Gb/s RDMA network card (~50 GB/s maximum bandwidth). And we follow a typical '
                'DeepSeek-V3/R1 production setting (128 tokens per batch, 7168 hidden, top-8 experts, FP8 '
                'dispatching and BF16 combining)"; rows "Dispatch #EP | Latency" 8: 77 us ... 256: 194 us, '
                '"Combine #EP | Latency" 8: 114 us ... 256: 360 us')
SCENARIOS += [
    Scenario("deepep", f"deepep_ll_ep{ep}", "DeepEP README (legacy V1 tables)", DEEPEP_LEGACY, "H800", ep, 128,
             4096, dispatch + combine, DEEPEP_QUOTE,
             f"dispatch {dispatch} + combine {combine} us, EP {ep}, pure RDMA"
             + (" (moeopt moves EP 8 over NVLink inside one node)" if ep == 8 else ""))
    for ep, (dispatch, combine) in DEEPEP_LL_US.items()]

SCENARIOS.append(Scenario(
    "latency", "vllm_mixtral_tp2_h200", "vLLM nightly benchmark (Buildkite)", VLLM_CI, "H200", 2, 8, 32, 1917.44,
    'vLLM CI: "Input length: 32 tokens. Output length: 128 tokens. Batch size: fixed (8)."; '
    '"latency_mixtral8x7B_tp2 | H200 | 1917.44 | 1916.58 | 1929" (mean, median, p99 ms); '
    f'{VLLM_TESTS}: "model": "mistralai/Mixtral-8x7B-Instruct-v0.1", "tensor_parallel_size": 2',
    "Mixtral-8x7B BF16 (the checkpoint's dtype; not stated), TP 2 with experts TP-sharded (vLLM's "
    "default without expert parallelism), one prefill + 127 decode steps, CUDA graphs",
    fixture="mixtral_8x7b", output_tokens=128, tp=2))


def instance(sc: Scenario) -> Instance:
    """The scenario's model on its GPUs (H800: H100 with NVLink at 200 GB/s per direction)."""
    dtype = "fp8" if sc.fixture == "deepseek_v3" else "bf16"
    model = model_from_hf_config(json.loads((FIXTURES / f"{sc.fixture}.json").read_text()),
                                 name=sc.name, weight_dtype=dtype)
    model["kv_dtype"] = "bf16"
    hardware = {"preset": "h200-sxm" if sc.gpu == "H200" else "h100-sxm", "num_gpus": sc.gpus}
    if sc.gpu == "H800":
        hardware["intra_node_bandwidth_gb_s"] = H800_NVLINK_GB_S
    if sc.kind == "latency":
        prompt, output, seqs = sc.tokens, sc.output_tokens, sc.seqs_per_gpu
    else:  # decode and deepep: s + (1 + 1) / 2 = the KV length
        prompt, output = (sc.tokens, 1) if sc.kind == "prefill" else (sc.tokens - 1, 1)
        seqs = sc.seqs_per_gpu * sc.gpus
    return Instance.model_validate({
        "name": sc.name, "model": model, "hardware": hardware,
        "workload": {"batch_sequences": seqs, "prompt_tokens": prompt, "output_tokens": output,
                     "micro_batches": [1]}})


def fixed_plan(inst: Instance, tp: int) -> Plan:
    """PP 1; tp 1: DP = EP = every GPU, contiguous experts; tp > 1: one replica, every expert
    sharded over the TP group (EP 1, ETP = TP). Megatron's layout."""
    m, gpus = inst.model, inst.hardware.num_gpus
    ep = gpus // tp
    deg = Degrees(tp=tp, pp=1, dp=gpus // tp, ep=ep, etp=tp, edp=1, micro_batches=1)
    per_rank = m.num_experts // ep
    placement = {l: tuple(tuple(range(r * per_rank, (r + 1) * per_rank)) for r in range(ep))
                 for l in m.moe_layer_ids}
    return Plan(inst.name, deg, even_stages(m.num_layers, 1), placement,
                megatron_layout(deg, inst.hardware.gpus_per_node))


def moeopt_figure(sc: Scenario) -> dict:
    """moeopt's figure in the source's unit, serial and with the MoE all-to-all hidden (None
    where hiding it does not apply), and the phase's time by explain operator (ms)."""
    inst = instance(sc)
    plan = fixed_plan(inst, sc.tp)
    ev = evaluate(inst, plan)
    phase = "prefill" if sc.kind in ("prefill", "latency") else "decode_step"
    ops = {row["operator"]: row["time_ms"] for row in explain(inst, plan)["phases"][phase]["operators"]}
    comm_s = ops["moe_communication"] / 1e3
    if sc.kind == "prefill":
        time_s, work = ev.ttft_ns / 1e9, GPUS_PER_NODE * sc.seqs_per_gpu * sc.tokens
    elif sc.kind == "decode":
        time_s, work = ev.tpot_ns / 1e9, GPUS_PER_NODE * sc.seqs_per_gpu
    elif sc.kind == "deepep":  # the decode step's all-to-all per MoE layer
        return {"serial": ops["moe_communication"] * 1e3 / len(inst.model.moe_layer_ids),
                "overlapped": None, "operators_ms": ops}
    else:  # latency: the first token after the prefill, then one decode step per further token
        ms = (ev.ttft_ns + (sc.output_tokens - 1) * ev.tpot_ns) / 1e6
        return {"serial": ms, "overlapped": None, "operators_ms": ops}
    return {"serial": work / time_s, "overlapped": work / (time_s - comm_s), "operators_ms": ops}


def rows() -> list[dict]:
    out = []
    for sc in SCENARIOS:
        fig = moeopt_figure(sc)
        over = fig["overlapped"]
        out.append({**asdict(sc), "unit": UNITS[sc.kind], "moeopt": fig["serial"], "moeopt_overlapped": over,
                    "ratio": fig["serial"] / sc.published,
                    "ratio_overlapped": None if over is None else over / sc.published,
                    "operators_ms": fig["operators_ms"]})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    table = rows()
    print(f"{'scenario':<28}{'GPU':>5}{'moeopt GPUs':>12}{'seq/GPU':>8}{'tokens':>7}{'unit':>18}"
          f"{'published':>11}{'moeopt':>10}{'ratio':>7}{'overlap':>10}{'ratio':>7}")
    for r in table:
        over = "-" if r["moeopt_overlapped"] is None else f"{r['moeopt_overlapped']:.0f}"
        ratio_over = "-" if r["ratio_overlapped"] is None else f"{r['ratio_overlapped']:.2f}"
        print(f"{r['name']:<28}{r['gpu']:>5}{r['gpus']:>12}{r['seqs_per_gpu']:>8}{r['tokens']:>7}"
              f"{r['unit']:>18}{r['published']:>11,.0f}{r['moeopt']:>10.0f}{r['ratio']:>7.2f}{over:>10}{ratio_over:>7}")
    print("\nratio = moeopt / published (for us and ms: > 1 means moeopt predicts slower); overlap = "
          "moeopt with the MoE all-to-all hidden behind compute")
    print("\nsources:")
    for r in table:
        print(f"  {r['name']}: {r['source']}, {r['url']}\n    {r['notes']}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
