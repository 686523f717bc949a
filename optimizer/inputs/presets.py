"""GPU and cluster presets with vendor-published per-GPU figures (docs/models.md).

Dense (not sparse) TFLOPS per data type; HBM in GB (1e9 B); bandwidths per GPU in GB/s.
HBM capacities are binary: the "80 GB" of an H100 is 80 GiB (5 stacks of 16 GiB), the
"141 GB" of an H200 141 GiB, so ``memory_gb`` is the GiB figure x 1.073741824
(aiconfigurator-core's ``systems/*.yaml`` ``mem_capacity`` gives the same bytes for A100,
H100, H200 and B200). The seed GPU's 64 GB is the seed's own figure, kept as written.
Scale-up = NVLink/Infinity Fabric per GPU (one direction: half the bidirectional figure
vendors print), scale-out = the network per GPU (one 400 Gb/s NIC = 50 GB/s).
"""

from __future__ import annotations

GPU_PRESETS: dict[str, dict] = {
    # NVIDIA A100 80GB SXM datasheet: 312 TF BF16 dense, 2.039 TB/s, NVLink3 600 GB/s bidir,
    # DGX A100: 8x ConnectX-6 HDR 200 Gb/s
    "a100-80gb": {"gpu": {"name": "A100 80GB SXM", "peak_tflops_by_dtype": {"bf16": 312.0},
                          "memory_gb": 85.89934592, "hbm_bandwidth_gb_s": 2039.0},
                  "gpus_per_node": 8, "intra_node_bandwidth_gb_s": 300.0,
                  "inter_node_bandwidth_gb_s": 25.0},
    # A100 40GB SXM: 312 TF BF16 dense, 40 GB HBM2, 1.555 TB/s
    "a100-40gb": {"gpu": {"name": "A100 40GB SXM", "peak_tflops_by_dtype": {"bf16": 312.0},
                          "memory_gb": 42.94967296, "hbm_bandwidth_gb_s": 1555.0},
                  "gpus_per_node": 8, "intra_node_bandwidth_gb_s": 300.0,
                  "inter_node_bandwidth_gb_s": 25.0},
    # H100 SXM5: 989.4 TF BF16, 1978.9 TF FP8 dense, 80 GB HBM3, 3.35 TB/s, NVLink4 900 GB/s
    # bidir, DGX H100: 8x ConnectX-7 NDR 400 Gb/s; "80 GB" = 80 GiB
    "h100-sxm": {"gpu": {"name": "H100 SXM5", "peak_tflops_by_dtype": {"bf16": 989.4, "fp8": 1978.9},
                         "memory_gb": 85.89934592, "hbm_bandwidth_gb_s": 3350.0},
                 "gpus_per_node": 8, "intra_node_bandwidth_gb_s": 450.0,
                 "inter_node_bandwidth_gb_s": 50.0},
    # H200 SXM: H100 compute, 141 GiB HBM3e usable, 4.8 TB/s
    "h200-sxm": {"gpu": {"name": "H200 SXM", "peak_tflops_by_dtype": {"bf16": 989.4, "fp8": 1978.9},
                         "memory_gb": 151.397597184, "hbm_bandwidth_gb_s": 4800.0},
                 "gpus_per_node": 8, "intra_node_bandwidth_gb_s": 450.0,
                 "inter_node_bandwidth_gb_s": 50.0},
    # B200 (HGX, 1000 W): 2250 BF16, 4500 FP8, 9000 FP4 dense; 180 GiB usable; 8 TB/s;
    # NVLink5 1.8 TB/s bidir
    "b200": {"gpu": {"name": "B200", "peak_tflops_by_dtype": {"bf16": 2250.0, "fp8": 4500.0, "mxfp4": 9000.0},
                     "memory_gb": 193.27352832, "hbm_bandwidth_gb_s": 8000.0},
             "gpus_per_node": 8, "intra_node_bandwidth_gb_s": 900.0, "inter_node_bandwidth_gb_s": 50.0},
    # MI300X: 1307.4 TF BF16, 2614.9 FP8 dense; 192 GiB HBM3 (8 stacks of 24 GiB), 5.3 TB/s; 128 GB/s to each of
    # 7 peers (896 GB/s aggregate)
    "mi300x": {"gpu": {"name": "MI300X", "peak_tflops_by_dtype": {"bf16": 1307.4, "fp8": 2614.9},
                       "memory_gb": 206.158430208, "hbm_bandwidth_gb_s": 5300.0},
               "gpus_per_node": 8, "intra_node_bandwidth_gb_s": 448.0, "inter_node_bandwidth_gb_s": 50.0},
    # The seed plan's GPU: 400 TFLOPS FP16, 64 GB, 1.8 TB/s; NVLink 400 GB/s, IB 100 GB/s
    "seed-gpu": {"gpu": {"name": "seed GPU", "peak_tflops_by_dtype": {"bf16": 400.0, "fp16": 400.0},
                         "memory_gb": 64.0, "hbm_bandwidth_gb_s": 1800.0},
                 "gpus_per_node": 8, "intra_node_bandwidth_gb_s": 400.0,
                 "inter_node_bandwidth_gb_s": 100.0},
}

# Each preset selects its hardware profile, optimizer/profiles/NAME.json (docs/calibration.md):
# fitted from measured kernel timings where they exist, flat 50 % / 80 % otherwise.
for _name, _preset in GPU_PRESETS.items():
    _preset["profile"] = _name


def compute_dtype(weight_dtype: str) -> str:
    """The tensor-core type a weight type computes in: FP8 weights on FP8 cores, MXFP4 on
    FP4 cores where the GPU has them (else dequantized to BF16), the rest in BF16."""
    return {"fp8": "fp8", "mxfp4": "mxfp4"}.get(weight_dtype, "bf16")


def peak_tflops(preset: dict, weight_dtype: str) -> float:
    """Dense peak of the preset GPU for a model whose weights are ``weight_dtype``."""
    table = preset["gpu"]["peak_tflops_by_dtype"]
    return table.get(compute_dtype(weight_dtype), table["bf16"])


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def expand_hardware(hardware: dict, weight_dtype: str) -> dict:
    """A hardware section with ``"preset": NAME`` filled in from the preset; every field the
    section gives itself wins. Raises KeyError for an unknown preset name."""
    name = hardware["preset"]
    preset = GPU_PRESETS[name]
    base = {k: v for k, v in preset.items() if k != "gpu"}
    base["gpu"] = {k: v for k, v in preset["gpu"].items() if k != "peak_tflops_by_dtype"}
    base["gpu"]["peak_tflops"] = peak_tflops(preset, weight_dtype)
    return _merge(base, {k: v for k, v in hardware.items() if k != "preset"})
