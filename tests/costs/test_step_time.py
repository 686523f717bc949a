"""The engine-step time of ``costs/step_time.py``: hand arithmetic on a tiny model, and
agreement with the static-batch phase costs of ``tables`` for the same token counts."""

from pathlib import Path

import pytest

from optimizer.costs import tables
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.step_time import step_batch, step_ns
from optimizer.costs.tables import LinkFacts
from optimizer.costs.timing import batch_times
from optimizer.costs.units import LOAD_SCALE
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance

INSTANCE = Path(__file__).resolve().parents[2] / "instances" / "10b_moe.json"
ONE_GPU = Degrees(tp=1, pp=1, dp=1, ep=1, etp=1, edp=1, micro_batches=1)
NO_LINKS = LinkFacts(0, 0, False, False, False)


def tiny(**workload) -> Instance:
    """2 MoE layers, h = 64, 4 heads x 16 (MHA), 4 experts top-2 of f = 128 (g = 2),
    V = 100, FP16; one GPU of 1 TFLOP/s and 100 GB/s, both at 100 % efficiency."""
    return Instance.model_validate({
        "name": "tiny",
        "model": {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                  "num_kv_heads": 4, "head_dim": 16, "num_experts": 4, "top_k": 2,
                  "expert_ffn_size": 128, "vocab_size": 100},
        "hardware": {"num_gpus": 1, "gpu": {"peak_tflops": 1.0, "memory_gb": 1.0,
                                            "hbm_bandwidth_gb_s": 100.0,
                                            "compute_efficiency": 1.0, "hbm_efficiency": 1.0},
                     "intra_node_bandwidth_gb_s": 100.0, "inter_node_bandwidth_gb_s": 10.0},
        "workload": workload or {"batch_sequences": 1, "prompt_tokens": 8, "output_tokens": 4},
    })


def test_mixed_step_by_hand():
    """One 8-token chunk that ends its prompt (start 0) + decode requests at contexts 10, 30.

    T = 10 tokens. Per layer (both MoE), dense part:
      linear FLOPs/token = 2 * attention params (4 * 64 * 64 = 16,384) + router 2 * 64 * 4
                         = 32,768 + 512 = 33,280
      core per key = 2 * (2 * 4 * 16) = 256; chunk keys 8^2 / 2 = 32; decode 4*4*16*40
      FLOPs = 10 * 33,280 + 256 * 32 + 10,240 = 351,232 -> 351.232 ns at 1e12 FLOP/s
      bytes = weights 16,384 * 2 = 32,768 + KV (8 new + 40 read) * 256 B = 12,288
              + activations 10 * 2 * (2 * 64 + 12 * 16) = 6,400  ->  51,456 B = 514.56 ns
      -> 515 ns (memory-bound)
    MoE part (one rank, load = LOAD_SCALE, no communication):
      F = 20 copies * 2*2*64*128 FLOPs = 655,360 -> 656 ns
      W = 4 * (1 - (1/2)^10) experts * 32,768 B = 130,944 B -> 1,309.44 -> 1,310 ns
      A = 20 * 2 * 2 * (64 + 128) = 15,360 B -> 153.6 -> 154 ns
      moe = max(656, 1,310 + 154) = 1,464 ns
    embedding 10 * 64 * 2 B = 1,280 B -> 13 ns; head over 3 logits: max(3 * 12,800 FLOPs,
    12,800 B) -> 128 ns. Step = 2 * 515 + 2 * 1,464 + 13 + 128 = 4,099 ns."""
    inst = tiny()
    batch = step_batch(inst, [(0, 8, True)], [10, 30])
    assert (batch.tokens, batch.logits) == (10, 3)
    assert step_ns(inst, ONE_GPU, NO_LINKS, [(0, 1)], {0: LOAD_SCALE, 1: LOAD_SCALE}, batch) == 4099


def test_chunk_with_cached_prefix_by_hand():
    """A chunk of 4 tokens from position 6 (not ending the prompt): keys (10^2 - 6^2)/2 = 32,
    KV: 4 written + 6 prefix read = 10 tokens * 256 B = 2,560 B.
      FLOPs = 4 * 33,280 + 256 * 32 = 141,312 -> 141.312 ns
      bytes = 32,768 + 2,560 + 4 * 2 * 320 = 37,888 -> 378.88 -> 379 ns per layer
    MoE: 8 copies; F = 262,144 -> 263 ns; W = 4 * (1 - 2^-4) * 32,768 = 122,880 -> 1,229 ns;
      A = 8 * 4 * 192 = 6,144 -> 61.44 -> 62 ns; moe = 1,229 + 62 = 1,291 ns
    embedding 512 B -> 6 ns; no logits: head = weights read 128 ns (as the tables count it).
    Prefill-only, one micro-batch: 2 * 379 + 2 * 1,291 + 6 + 128 = 3,474 ns."""
    inst = tiny()
    batch = step_batch(inst, [(6, 4, False)], [])
    assert step_ns(inst, ONE_GPU, NO_LINKS, [(0, 1)], {0: LOAD_SCALE, 1: LOAD_SCALE}, batch) == 3474


@pytest.fixture(scope="module")
def ten_b() -> Instance:
    return load_model(INSTANCE, Instance, "instance")


@pytest.mark.parametrize("deg", [
    Degrees(tp=2, pp=2, dp=2, ep=4, etp=1, edp=1, micro_batches=2),
    Degrees(tp=1, pp=4, dp=4, ep=2, etp=2, edp=1, micro_batches=8),
    Degrees(tp=4, pp=1, dp=2, ep=8, etp=1, edp=1, micro_batches=1),
])
def test_pure_steps_equal_static_phases(ten_b, deg):
    """A step of whole prompts (one micro-batch's sequences, each chunk from 0) equals the
    static prefill makespan; a decode step at the static mean context equals the static
    decode step, for the same micro-batch count, split and hot loads (10b_moe: 128 x 10,240
    prompt tokens; the step's expert-read fraction is 1 to float precision at these sizes)."""
    inst = ten_b.model_copy(update={"workload": ten_b.workload.model_copy(update={"output_tokens": 64})})
    facts = LinkFacts.of(megatron_layout(deg, inst.hardware.gpus_per_node))
    costs = tables.stage_costs(inst, deg, facts)
    per_stage = inst.model.num_layers // deg.pp
    stages = [tuple(range(j * per_stage, (j + 1) * per_stage)) for j in range(deg.pp)]
    hot = {l: LOAD_SCALE // deg.ep + 7_919 * (l % 3) for l in range(inst.model.num_layers)}
    _, ttft, tpot, _ = batch_times(costs, stages, hot)
    seqs, prompt = costs.seqs_per_micro_batch, inst.workload.prompt_tokens
    prefill = step_batch(inst, [(0, prompt, True)] * seqs, [])
    assert step_ns(inst, deg, facts, stages, hot, prefill, deg.micro_batches) == ttft
    context = int(tables.decode_context(inst))
    decode = step_batch(inst, [], [context] * seqs)
    assert step_ns(inst, deg, facts, stages, hot, decode, deg.micro_batches) == tpot


def test_step_time_grows_with_context_and_tokens():
    """Monotone in what the step carries: more decode context or more chunk tokens never
    make the step faster, and an empty step costs nothing."""
    inst = tiny()
    times = [step_ns(inst, ONE_GPU, NO_LINKS, [(0, 1)], {0: LOAD_SCALE, 1: LOAD_SCALE},
                     step_batch(inst, [(0, n, True)] if n else [], [100] * 4 + [c]))
             for n, c in [(0, 10), (0, 5000), (64, 5000), (512, 5000)]]
    assert times == sorted(times) and times[0] > 0
    assert step_ns(inst, ONE_GPU, NO_LINKS, [(0, 1)], {0: 1, 1: 1}, step_batch(inst, [], [])) == 0
