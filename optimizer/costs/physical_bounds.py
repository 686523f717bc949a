"""Physical bounds that no plan can beat, used to explain infeasible instances."""

from __future__ import annotations

from optimizer.costs import formulas as cm
from optimizer.inputs.schema import Instance


def batch_flops(inst: Instance) -> float:
    """Prefill FLOPs of the whole batch, LM head (last positions) included."""
    wl, m = inst.workload, inst.model
    return (wl.batch_sequences * wl.prompt_tokens * cm.prefill_flops_per_token(m, wl.prompt_tokens)
            + wl.batch_sequences * cm.lm_head_flops_per_sequence(m))


def decode_step_kv_bytes(inst: Instance) -> float:
    """KV cache every decode step must read, summed over the batch, at the mean context."""
    wl, m = inst.workload, inst.model
    ctx = int(wl.prompt_tokens + (wl.output_tokens + 1) / 2)
    per_seq = sum(cm.kv_tokens(m, l, ctx) * cm.kv_bytes_per_token_layer(m, 1) for l in range(m.num_layers))
    return wl.batch_sequences * per_seq


def min_batch_time_s(inst: Instance, num_gpus: int, at_peak: bool) -> float:
    """Lower bound on the batch's time: prefill FLOPs spread over every GPU, plus per decode
    step the larger of its FLOPs and its KV-cache reads spread over every GPU (at 100 % of
    peak FLOP/s and bandwidth with ``at_peak``, else at the instance's efficiencies)."""
    gpu, wl, m = inst.hardware.gpu, inst.workload, inst.model
    flops_rate = num_gpus * gpu.peak_tflops * 1e12 * (1.0 if at_peak else gpu.compute_efficiency)
    bytes_rate = num_gpus * gpu.hbm_bandwidth_gb_s * 1e9 * (1.0 if at_peak else gpu.hbm_efficiency)
    time_s = batch_flops(inst) / flops_rate
    if wl.output_tokens:
        ctx = int(wl.prompt_tokens + (wl.output_tokens + 1) / 2)
        step_flops = wl.batch_sequences * sum(
            cm.decode_dense_flops_per_token_layer(m, cm.kv_tokens(m, l, ctx), l)
            + (m.top_k * cm.expert_flops_per_routed_token(m) if cm.is_moe_layer(m, l) else 0.0)
            for l in range(m.num_layers))
        time_s += wl.output_tokens * max(step_flops / flops_rate, decode_step_kv_bytes(inst) / bytes_rate)
    return time_s


def max_throughput_tokens_per_ms(inst: Instance, num_gpus: int, at_peak: bool) -> float:
    """Upper bound on tokens/ms (prompt + generated) for the deployment: every GPU busy all
    the time (see ``min_batch_time_s``)."""
    wl = inst.workload
    tokens = wl.batch_sequences * (wl.prompt_tokens + wl.output_tokens)
    return tokens / min_batch_time_s(inst, num_gpus, at_peak) / 1e3


def min_ttft_s(inst: Instance, num_gpus: int) -> float:
    """Lower bound on the batch TTFT: its FLOPs spread perfectly over every GPU."""
    return cm.compute_s(batch_flops(inst), inst.hardware.gpu) / num_gpus


def min_memory_per_gpu_gb(inst: Instance, num_gpus: int) -> float:
    """Lower bound on memory per GPU: weights and KV cache spread perfectly, GB."""
    wl, m = inst.workload, inst.model
    kv = wl.batch_sequences * wl.prompt_tokens * cm.kv_bytes_per_token(m)
    return (cm.weight_bytes(m) + kv) / num_gpus / 1e9
