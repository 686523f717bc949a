"""Physical bounds that no plan can beat, used to explain infeasible instances."""

from __future__ import annotations

from optimizer import costmodel as cm
from optimizer.schema import Instance


def batch_flops(inst: Instance) -> float:
    """Prefill FLOPs of the whole batch, LM head (last positions) included."""
    wl, m = inst.workload, inst.model
    return (wl.batch_sequences * wl.prompt_tokens * cm.prefill_flops_per_token(m, wl.prompt_tokens)
            + wl.batch_sequences * cm.lm_head_flops_per_sequence(m))


def max_throughput_tokens_per_ms(inst: Instance, num_gpus: int, at_peak: bool) -> float:
    """Upper bound on prompt tokens/ms for the deployment: all GPUs computing all the time,
    at 100 % of peak (``at_peak``) or at the instance's compute efficiency."""
    gpu = inst.hardware.gpu
    rate = num_gpus * gpu.peak_tflops * 1e12 * (1.0 if at_peak else gpu.compute_efficiency)
    tokens = inst.workload.batch_sequences * inst.workload.prompt_tokens
    return tokens / (batch_flops(inst) / rate) / 1e3


def min_ttft_s(inst: Instance, num_gpus: int) -> float:
    """Lower bound on the batch TTFT: its FLOPs spread perfectly over every GPU."""
    return cm.compute_s(batch_flops(inst), inst.hardware.gpu) / num_gpus


def min_memory_per_gpu_gb(inst: Instance, num_gpus: int) -> float:
    """Lower bound on memory per GPU: weights and KV cache spread perfectly, GB."""
    wl, m = inst.workload, inst.model
    kv = wl.batch_sequences * wl.prompt_tokens * cm.kv_bytes_per_token(m)
    return (cm.weight_bytes(m) + kv) / num_gpus / 1e9
