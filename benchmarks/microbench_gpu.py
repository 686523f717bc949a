"""Measure operator timings on a real GPU with the user's PyTorch and write the CSV that
``moeopt calibrate --from`` fits (columns: docs/calibration.md, ``optimizer.profiles.fit``).

    python -m benchmarks.microbench_gpu -o measurements.csv [--quick]
    torchrun --nproc-per-node 8 -m benchmarks.microbench_gpu -o measurements.csv   # + collectives

Measured: dense GEMMs (bf16; fp8 through torch._scaled_mm where the GPU has it), grouped
expert GEMMs (one matmul per expert, the shape an expert sees), causal prefill and decode
attention (torch's scaled_dot_product_attention, MHA and GQA), and with torchrun the NCCL
all-reduce, all-gather and all-to-all inside the node. FLOP and byte counts are moeopt's
(the ``*_row`` functions below, importable and testable without torch). Without torch or a
GPU the script says so and exits 0 having written nothing.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

from optimizer.profiles.fit import COLUMNS

BYTES = {"bf16": 2, "fp8": 1}


def _row(**fields) -> dict:
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    return {c: fields.get(c, "") for c in COLUMNS}


def gemm_row(dtype: str, m: int, n: int, k: int, latency_s: float) -> dict:
    """A GEMM of m tokens through an n x k weight: 2mnk FLOP; weights + 16-bit in/out bytes."""
    return _row(op="gemm", dtype=dtype, m=m, n=n, k=k, flops=2.0 * m * n * k,
                hbm_bytes=n * k * BYTES[dtype] + 2 * m * (n + k), latency_s=latency_s)


def grouped_row(dtype: str, experts: int, tokens_per_expert: float, hidden: int, inter: int,
                latency_s: float, matrices: int = 3) -> dict:
    """``experts`` experts of ``matrices`` hidden x inter weights, each on tokens_per_expert
    rows: FLOP 2*g*h*f per row; bytes = the weights + rows in and out of h and f."""
    rows = experts * tokens_per_expert
    return _row(op="grouped_gemm", dtype=dtype, tokens_per_expert=tokens_per_expert, hidden=hidden,
                inter=inter, experts_per_gpu=experts, flops=2.0 * matrices * hidden * inter * rows,
                hbm_bytes=experts * matrices * hidden * inter * BYTES[dtype] + rows * 2 * 2 * (hidden + inter),
                latency_s=latency_s)


def attention_row(phase: str, batch: int, context: int, heads: int, kv_heads: int, head_dim: int,
                  latency_s: float) -> dict:
    """Causal prefill of ``context`` tokens (FLOP 2*n*d*s^2 per sequence, q/k/v/o bytes) or one
    decode token against ``context`` cached keys (FLOP 4*n*d*c, the K and V read); the CSV's
    context is the prompt length (prefill) or the KV tokens read, batch x context (decode)."""
    kind = "mha" if heads == kv_heads else "gqa"
    if phase == "prefill":
        flops = batch * 2.0 * heads * head_dim * context * context
        num_bytes = batch * context * (2 * heads + 2 * kv_heads) * head_dim * 2
    else:
        flops = batch * 4.0 * heads * head_dim * context
        num_bytes = batch * context * 2 * kv_heads * head_dim * 2
    x = context if phase == "prefill" else batch * context
    return _row(op="attention", kind=kind, phase=phase, sliding=0, context=x, flops=flops,
                hbm_bytes=num_bytes, latency_s=latency_s)


def collective_row(op: str, peers: int, message_bytes: int, latency_s: float,
                   link: str = "intra", family: str = "nccl") -> dict:
    return _row(op=op, peers=peers, link=link, family=family, message_bytes=message_bytes,
                latency_s=latency_s)


def write_csv(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------- GPU part (needs torch)
def _timer(torch, fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats * 1e-3


def measure(torch, quick: bool) -> list[dict]:  # pragma: no cover (needs a GPU)
    dev, rows, reps = "cuda", [], 5 if quick else 20
    bf16 = torch.bfloat16
    ms = [1, 16, 128, 1024, 8192] if quick else [1, 4, 16, 64, 256, 1024, 4096, 16384]
    shapes = [(4096, 4096), (14336, 4096), (4096, 14336)] if quick else \
        [(n, k) for n in (1024, 2048, 4096, 8192, 16384) for k in (1024, 2048, 4096, 7168, 8192)]
    for n, k in shapes:
        w = torch.randn(n, k, device=dev, dtype=bf16)
        for m in ms:
            x = torch.randn(m, k, device=dev, dtype=bf16)
            rows.append(gemm_row("bf16", m, n, k, _timer(torch, lambda: x @ w.t(), reps)))
            if hasattr(torch, "_scaled_mm") and torch.cuda.get_device_capability() >= (8, 9) and m % 16 == 0:
                wq, xq = w.to(torch.float8_e4m3fn), x.to(torch.float8_e4m3fn)
                one = torch.ones((), device=dev)
                rows.append(gemm_row("fp8", m, n, k, _timer(
                    torch, lambda: torch._scaled_mm(xq, wq.t(), scale_a=one, scale_b=one, out_dtype=bf16), reps)))
    for hidden, inter, experts in ((4096, 14336, 8), (7168, 2048, 32), (2048, 768, 16)):
        gate_up = [torch.randn(2 * inter, hidden, device=dev, dtype=bf16) for _ in range(experts)]
        down = [torch.randn(hidden, inter, device=dev, dtype=bf16) for _ in range(experts)]
        for tpe in (1, 8, 64, 512):
            xs = [torch.randn(tpe, hidden, device=dev, dtype=bf16) for _ in range(experts)]
            def experts_fn():
                for x, wgu, wd in zip(xs, gate_up, down):  # gate + up, then down: 3 h x f GEMMs
                    (x @ wgu.t())[:, :inter] @ wd.t()
            rows.append(grouped_row("bf16", experts, tpe, hidden, inter, _timer(torch, experts_fn, reps)))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for heads, kv in ((32, 8), (32, 32)):
        for ctx in (512, 2048, 8192):
            q = torch.randn(1, heads, ctx, 128, device=dev, dtype=bf16)
            k = torch.randn(1, kv, ctx, 128, device=dev, dtype=bf16)
            rows.append(attention_row("prefill", 1, ctx, heads, kv, 128, _timer(
                torch, lambda: sdpa(q, k, k, is_causal=True, enable_gqa=heads != kv), reps)))
            q1 = torch.randn(64, heads, 1, 128, device=dev, dtype=bf16)
            kb = torch.randn(64, kv, ctx, 128, device=dev, dtype=bf16)
            rows.append(attention_row("decode", 64, ctx, heads, kv, 128, _timer(
                torch, lambda: sdpa(q1, kb, kb, enable_gqa=heads != kv), reps)))
    return rows


def measure_collectives(torch) -> list[dict]:  # pragma: no cover (needs GPUs and torchrun)
    import torch.distributed as dist
    dist.init_process_group("nccl")
    world = dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    rows = []
    for size in (2 ** p for p in range(10, 29, 2)):
        x = torch.empty(size // 2, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(size // 2 * world, device="cuda", dtype=torch.bfloat16)
        y = torch.empty_like(x)
        for op, fn in (("all_reduce", lambda: dist.all_reduce(x)),
                       ("all_gather", lambda: dist.all_gather_into_tensor(out, x)),
                       ("all_to_all", lambda: dist.all_to_all_single(y, x))):
            rows.append(collective_row(op, world, size, _timer(torch, fn, 10)))
    return rows if dist.get_rank() == 0 else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, help="CSV to write")
    parser.add_argument("--quick", action="store_true", help="a few shapes only")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("microbench_gpu: PyTorch is not installed here; skipping the GPU measurements "
              "(nothing written)", file=sys.stderr)
        return 0
    if not torch.cuda.is_available():  # pragma: no cover
        print("microbench_gpu: no CUDA GPU visible; skipping the GPU measurements (nothing written)",
              file=sys.stderr)
        return 0
    rows = measure(torch, args.quick)  # pragma: no cover
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # pragma: no cover
        rows += measure_collectives(torch)
        if not rows:
            return 0
    write_csv(rows, args.output)  # pragma: no cover
    print(f"wrote {len(rows)} measurements to {args.output}")  # pragma: no cover
    return 0


if __name__ == "__main__":
    sys.exit(main())
