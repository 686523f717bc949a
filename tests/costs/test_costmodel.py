"""Exact cost-model figures for instances/10b_moe.json, each worked by hand.

Architecture A of docs/cost-model.md Part 2a: h = 4096, 16 heads x 256 (MHA, 16 KV heads),
16 layers, 16 experts of a plain FFN (g = 2) with f = 4096, top-2, V = 32,000 untied, FP16.
Hand building blocks used throughout:
  attention / layer  4 * 4096^2          = 67,108,864 params (134,217,728 B)
  one expert         2 * 4096 * 4096     = 33,554,432 params  (67,108,864 B)
  router             4096 * 16           =     65,536 params
  norms / layer      2 * 4096            =      8,192 params
  embedding = head   32,000 * 4096       = 131,072,000 params (262,144,000 B)
"""

from pathlib import Path

import pytest

from optimizer.costs import formulas as cm
from optimizer.costs import tables
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.tables import LinkFacts
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance, ModelSpec
from optimizer.plan.evaluate import stage_memory

INSTANCE = Path(__file__).resolve().parents[2] / "instances" / "10b_moe.json"

EXACT = 1e-12  # relative tolerance for float results of exact hand arithmetic


@pytest.fixture(scope="module")
def inst() -> Instance:
    """The 10b_moe instance as shipped."""
    return load_model(INSTANCE, Instance, "instance")


def weights_per_gpu(inst: Instance, deg: Degrees, num_layers: int, first: bool, last: bool) -> int:
    """Per-GPU weight bytes of a stage under ``deg`` on Megatron's layout."""
    costs = tables.stage_costs(inst, deg, LinkFacts.of(megatron_layout(deg, 8)))
    return stage_memory(costs, range(num_layers), first, last).weights


def kv_per_gpu(inst: Instance, deg: Degrees, num_layers: int) -> int:
    """Per-GPU KV-cache bytes after prefill of a stage holding ``num_layers`` layers."""
    costs = tables.stage_costs(inst, deg, LinkFacts.of(megatron_layout(deg, 8)))
    return stage_memory(costs, range(num_layers), True, False).kv_cache


# ---------------------------------------------------------------- parameters
def test_total_params_10b(inst):
    """Total parameters are 9,927,004,160 (docs/cost-model.md Part 2a, architecture A)."""
    # per layer 67,108,864 + 16 * 33,554,432 + 65,536 + 8,192 = 604,053,504
    # 16 layers = 9,664,856,064; + embedding + head 2 * 131,072,000 + final norm 4,096
    # = 9,664,856,064 + 262,148,096 = 9,927,004,160
    assert cm.total_params(inst.model) == 9_927_004_160


def test_active_params_10b(inst):
    """Active parameters (top-2) are 2,410,811,392."""
    # per layer 67,108,864 + 2 * 33,554,432 + 65,536 + 8,192 = 134,291,456
    # 16 layers = 2,148,663,296; + 262,148,096 (embedding, head, final norm) = 2,410,811,392
    assert cm.active_params(inst.model) == 2_410_811_392


def test_weight_bytes_10b(inst):
    """The whole model is 19,854,008,320 B = 19.85 GB in FP16."""
    # 2 B * 9,927,004,160 = 19,854,008,320
    assert cm.weight_bytes(inst.model) == 19_854_008_320


# ---------------------------------------------------------------- KV cache
def test_kv_bytes_per_token_layer_10b(inst):
    """K and V of one token in one layer are 16,384 B."""
    # 2 (K, V) * 16 KV heads * 256 * 2 B = 16,384
    assert cm.kv_bytes_per_token_layer(inst.model) == 16_384


def test_kv_bytes_per_token_10b(inst):
    """K and V of one token over the 16 layers are 262,144 B (256 KiB)."""
    # 16 layers * 16,384 = 262,144
    assert cm.kv_bytes_per_token(inst.model) == 262_144


def test_kv_bytes_per_token_layer_split_by_tp(inst):
    """TP 4 leaves 4 of the 16 KV heads on a GPU: 4,096 B per token and layer."""
    # 2 * (16 / 4) * 256 * 2 B = 4,096
    assert cm.kv_bytes_per_token_layer(inst.model, tp=4) == 4_096


def test_kv_heads_replicated_when_tp_exceeds_kv_heads():
    """With TP 16 > 8 KV heads each GPU keeps one whole KV head (replication)."""
    # Mixtral: 2 * max(8 // 16, 1) * 128 * 2 B = 512
    assert cm.kv_bytes_per_token_layer(mixtral(), tp=16) == 512


def test_kv_per_gpu_seed_mapping(inst):
    """Seed mapping (TP 4 x DP 8, PP 2) holds 5.37 GB of KV per GPU after prefill."""
    # 128 / DP 8 = 16 sequences per replica; 16 * 10,240 tokens * 4,096 B (TP 4) * 8 layers
    # = 5,368,709,120 B = 343,597,383,680 B (whole batch) / (4 * 8 * 2)
    deg = Degrees(tp=4, pp=2, dp=8, ep=8, etp=1, edp=4, micro_batches=1)
    assert kv_per_gpu(inst, deg, 8) == 5_368_709_120
    assert 128 * 10_240 * 262_144 // (4 * 8 * 2) == 5_368_709_120


def test_kv_per_gpu_folded_mapping(inst):
    """Folded mapping (TP 4 x DP 2, PP 2) holds 21.5 GB of KV per GPU after prefill."""
    # 128 / DP 2 = 64 sequences; 64 * 10,240 * 4,096 B * 8 layers = 21,474,836,480 B
    # = 343,597,383,680 / (4 * 2 * 2)
    deg = Degrees(tp=4, pp=2, dp=2, ep=8, etp=1, edp=1, micro_batches=4)
    assert kv_per_gpu(inst, deg, 8) == 21_474_836_480
    assert 128 * 10_240 * 262_144 // (4 * 2 * 2) == 21_474_836_480


# ---------------------------------------------------------------- FLOPs
def test_prefill_flops_per_token_10b(inst):
    """Prefill costs 5,639,241,728 FLOP per prompt token at s = 10,240 (causal halving)."""
    # per layer: projections 2 * 67,108,864 = 134,217,728
    #            scores + context 2 * 10,240 * 4096 = 83,886,080
    #            router 2 * 65,536 = 131,072
    #            experts 2 (top-k) * 2 * 33,554,432 = 134,217,728
    #            sum 352,452,608; * 16 layers = 5,639,241,728
    assert cm.prefill_flops_per_token(inst.model, 10_240) == 5_639_241_728


def test_lm_head_flops_per_sequence_10b(inst):
    """The LM head for one last position costs 2 * 4096 * 32,000 = 262,144,000 FLOP."""
    assert cm.lm_head_flops_per_sequence(inst.model) == 262_144_000


# ---------------------------------------------------------------- weights per GPU
def test_weights_seed_literal_tp4_ep8_etp1_pp2(inst):
    """TP4/EP8/ETP1/PP2, 8 layers: 1,408,892,928 B on the first stage (1.41 GB)."""
    # per layer: attention 67,108,864 / 4 = 16,777,216; router 65,536; norms 8,192;
    #            16/8 = 2 whole experts 2 * 33,554,432 = 67,108,864
    #            = 83,959,808 params * 2 B = 167,919,616 B; * 8 layers = 1,343,356,928
    # + embedding, vocab-parallel over TP 4: 131,072,000 / 4 * 2 B = 65,536,000
    # = 1,408,892,928
    deg = Degrees(tp=4, pp=2, dp=8, ep=8, etp=1, edp=4, micro_batches=1)
    assert weights_per_gpu(inst, deg, 8, first=True, last=False) == 1_408_892_928


def test_weights_seed_literal_last_stage(inst):
    """The last stage holds the LM head slice and the final norm instead: 1,408,901,120 B."""
    # 1,343,356,928 + head 65,536,000 + final norm 4096 * 2 B = 8,192 -> 1,408,901,120
    deg = Degrees(tp=4, pp=2, dp=8, ep=8, etp=1, edp=4, micro_batches=1)
    assert weights_per_gpu(inst, deg, 8, first=False, last=True) == 1_408_901_120


def test_weights_megatron_default_etp4(inst):
    """TP4/EP8/ETP4/PP2, 8 layers: 603,586,560 B on the first stage (0.60 GB)."""
    # per layer: 16,777,216 + 65,536 + 8,192 + 2 experts * 33,554,432 / ETP 4 (16,777,216)
    #            = 33,628,160 params * 2 B = 67,256,320 B; * 8 = 538,050,560
    # + embedding slice 65,536,000 = 603,586,560
    deg = Degrees(tp=4, pp=2, dp=8, ep=8, etp=4, edp=1, micro_batches=1)
    assert weights_per_gpu(inst, deg, 8, first=True, last=False) == 603_586_560


def test_weights_single_gpu_is_whole_model(inst):
    """TP1/EP1/PP1 puts all 19.85 GB of weights on each GPU."""
    # 16 * 604,053,504 * 2 B = 19,329,712,128; + embedding 262,144,000 + head 262,144,000
    # + final norm 8,192 = 19,854,008,320 = 2 * 9,927,004,160
    deg = Degrees(tp=1, pp=1, dp=8, ep=1, etp=1, edp=8, micro_batches=1)
    assert weights_per_gpu(inst, deg, 16, first=True, last=True) == 19_854_008_320


def test_weights_middle_stage_tp2_ep4_etp2_pp4(inst):
    """TP2/EP4/ETP2/PP4, a middle stage of 4 layers: 805,896,192 B (no embedding, no head)."""
    # per layer: attention 67,108,864 / 2 = 33,554,432; router 65,536; norms 8,192;
    #            16/4 = 4 experts * 33,554,432 / ETP 2 = 67,108,864
    #            = 100,737,024 params * 2 B = 201,474,048 B; * 4 layers = 805,896,192
    deg = Degrees(tp=2, pp=4, dp=4, ep=4, etp=2, edp=1, micro_batches=1)
    assert weights_per_gpu(inst, deg, 4, first=False, last=False) == 805_896_192


# ---------------------------------------------------------------- Mixtral sanity check
def mixtral() -> ModelSpec:
    """Mixtral-8x7B (docs/cost-model.md §1.1)."""
    return ModelSpec(name="Mixtral-8x7B", num_layers=32, hidden_size=4096,
                     num_attention_heads=32, num_kv_heads=8, head_dim=128, num_experts=8,
                     top_k=2, expert_ffn_size=14336, ffn_matrices=3, vocab_size=32000,
                     tie_word_embeddings=False)


def test_mixtral_total_params():
    """Mixtral-8x7B has 46.70 B parameters (exactly 46,702,792,704)."""
    # attention 4096*4096 (Q) + 2*4096*1024 (K, V) + 4096*4096 (O) = 41,943,040
    # expert 3 * 4096 * 14,336 = 176,160,768; 8 experts = 1,409,286,144
    # layer = 41,943,040 + 1,409,286,144 + router 32,768 + norms 8,192 = 1,451,270,144
    # 32 layers = 46,440,644,608; + 2 * 32,000 * 4096 + 4096 = 46,702,792,704
    total = cm.total_params(mixtral())
    assert total == pytest.approx(46.70e9, rel=0.005)
    assert total == 46_702_792_704


def test_mixtral_active_params():
    """Mixtral-8x7B has 12.88 B active parameters (exactly 12,879,925,248)."""
    # layer: 41,943,040 + 2 * 176,160,768 + 32,768 + 8,192 = 394,305,536
    # 32 layers = 12,617,777,152; + 262,148,096 = 12,879,925,248
    active = cm.active_params(mixtral())
    assert active == pytest.approx(12.88e9, rel=0.005)
    assert active == 12_879_925_248


# ---------------------------------------------------------------- roofline and collectives
def test_compute_hbm_and_roofline(inst):
    """At 50 % of 400 TFLOP/s and 80 % of 1.8 TB/s: 200e12 FLOP and 1.44e12 B take 1 s."""
    gpu = inst.hardware.gpu
    assert cm.compute_s(200e12, gpu) == pytest.approx(1.0, rel=EXACT)
    assert cm.hbm_s(1.44e12, gpu) == pytest.approx(1.0, rel=EXACT)
    # max(400e12 / 200e12, 1.44e12 / 1.44e12) = 2 s (compute bound)
    assert cm.roofline_s(400e12, 1.44e12, gpu) == pytest.approx(2.0, rel=EXACT)
    # max(1 s, 2.88e12 / 1.44e12 = 2 s) = 2 s (memory bound)
    assert cm.roofline_s(200e12, 2.88e12, gpu) == pytest.approx(2.0, rel=EXACT)


def test_allreduce_tp4_micro_batch():
    """TP-4 all-reduce of a 16-sequence micro-batch: 5.0632 ms (audit: 5.03 ms + latency)."""
    # S = 163,840 tokens * 4096 * 2 B = 1,342,177,280 B
    # 2 * 3/4 * S / 400e9 = 5.0331648e-3 s; + 2 * 3 steps * 5 us = 3e-5 -> 5.0631648e-3
    assert cm.allreduce_s(1_342_177_280, 4, 400e9, 5e-6) == pytest.approx(5.0631648e-3, rel=EXACT)
    assert cm.allreduce_s(1_342_177_280, 1, 400e9, 5e-6) == 0.0


def test_allgather_ring():
    """All-gather of 8 GB over 8 GPUs at 400 GB/s with 10 us steps: 17.57 ms."""
    # 7/8 * 8e9 / 400e9 = 0.0175 s; + 7 * 10 us = 7e-5 -> 0.01757 s
    assert cm.allgather_s(8e9, 8, 400e9, 10e-6) == pytest.approx(0.01757, rel=EXACT)
    assert cm.allgather_s(8e9, 1, 400e9, 10e-6) == 0.0


def test_all_to_all_hot_strided_ep(inst):
    """EP 8 with 1 local and 6 remote peers: the IB share sets 5.03 ms (audit's dispatch)."""
    # each GPU sends 40,960 tokens * 2 copies * 4096 * 2 B = 671,088,640 B, 1/8 per peer
    # = 83,886,080 B; intra 1 * 83,886,080 / 400e9 = 0.21 ms,
    # inter 6 * 83,886,080 / 100e9 = 5.0331648 ms -> max = 5.0331648e-3 s
    t = cm.all_to_all_hot_s(83_886_080, 1, 6, inst.hardware)
    assert t == pytest.approx(5.0331648e-3, rel=EXACT)


def test_all_to_all_hot_inside_node(inst):
    """EP 8 inside one node: 7 peers over NVLink, 1.468 ms (audit's folded 587 MB / 400 GB/s)."""
    # 7 * 83,886,080 / 400e9 = 1.4680064e-3 s; no remote share
    t = cm.all_to_all_hot_s(83_886_080, 7, 0, inst.hardware)
    assert t == pytest.approx(1.4680064e-3, rel=EXACT)


def test_pipeline_makespan_balanced():
    """(m + p - 1) * t_s + (p - 1) * t_p2p for balanced stages: 5 * 0.6 + 0.003 = 3.003 s."""
    assert cm.pipeline_makespan([0.6, 0.6], 4, 0.003) == pytest.approx(3.003, rel=EXACT)


def test_pipeline_makespan_unbalanced():
    """sum t_j + (m - 1) max t_j + (p - 1) t_p2p: 1.8 + 3 * 0.7 + 2 * 0.01 = 3.92 s."""
    assert cm.pipeline_makespan([0.5, 0.7, 0.6], 4, 0.01) == pytest.approx(3.92, rel=EXACT)


def test_pipeline_makespan_single_micro_batch():
    """One micro-batch through two stages is their sum plus one send: 1.406714829 s."""
    # 0.704649553 + 0.698699832 + 0.003365444 = 1.406714829 (the seed audit-layout figure)
    got = cm.pipeline_makespan([0.704649553, 0.698699832], 1, 0.003365444)
    assert got == pytest.approx(1.406714829, rel=EXACT)
