"""Weight and KV-cache data types of a HF checkpoint: ``torch_dtype`` (or ``dtype``) gives the
weights and the KV cache; ``quantization_config.quant_method`` "fp8" (or fbgemm_fp8,
compressed-tensors FP8) makes every weight FP8, "mxfp4" makes the routed experts MXFP4. An
explicit weight dtype replaces both."""

from __future__ import annotations

from optimizer.errors import InputError
from optimizer.inputs.hf.config import Cfg
from optimizer.inputs.schema import DTYPE_BYTES, ModelSpec

TORCH_DTYPES: dict[str, str] = {
    "bfloat16": "bf16", "bf16": "bf16",
    "float16": "fp16", "fp16": "fp16", "half": "fp16",
    "float32": "fp32", "fp32": "fp32", "float": "fp32",
    "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "fp8": "fp8",
}
DEFAULT_DTYPE = "bf16"  # when a config names no dtype (GPT-OSS's config.json has none)

WEIGHT_DTYPES = ("bf16", "fp16", "fp8", "mxfp4")


def dtype_fields(root: Cfg, text: Cfg, weight_dtype: str | None) -> dict:
    """weight_dtype, expert_weight_dtype and kv_dtype from torch_dtype and quantization_config
    (or an explicit ``weight_dtype``: 'mxfp4' = MXFP4 routed experts, the rest in the
    checkpoint's type)."""
    raw, where = None, None
    for c in (text, root):
        for key in ("torch_dtype", "dtype"):
            if raw is None and c.has(key):
                raw, where = c.str(key), f"{c.prefix}{key}"
    if raw is None:
        base = DEFAULT_DTYPE
    elif raw in TORCH_DTYPES:
        base = TORCH_DTYPES[raw]
    else:
        raise InputError(f"{root.source}: {where}={raw!r}: unknown dtype (known: "
                         f"{', '.join(sorted(TORCH_DTYPES))})")
    activation = base if base in ("bf16", "fp16", "fp32") else "bf16"
    out = {"weight_dtype": activation, "expert_weight_dtype": None, "kv_dtype": activation}
    if weight_dtype is not None:
        if weight_dtype not in DTYPE_BYTES:
            raise InputError(f"weight dtype {weight_dtype!r}: unknown (known: {', '.join(DTYPE_BYTES)})")
        if weight_dtype == "mxfp4":
            out["expert_weight_dtype"] = "mxfp4"
        else:
            out["weight_dtype"] = weight_dtype
        return out
    out["weight_dtype"] = base
    quant = root.data.get("quantization_config") or text.data.get("quantization_config")
    if quant is not None:
        qc = root.sub("quantization_config") if root.has("quantization_config") else text.sub("quantization_config")
        method = qc.str("quant_method")
        if method in ("fp8", "fbgemm_fp8") or (method == "compressed-tensors" and _compressed_fp8(qc)):
            out["weight_dtype"] = "fp8"
        elif method == "mxfp4":
            out["expert_weight_dtype"] = "mxfp4"
        else:
            raise InputError(f"{root.source}: {qc.prefix}quant_method={method!r}: not supported "
                             f"(fp8, fbgemm_fp8, compressed-tensors FP8, mxfp4); give the weight "
                             f"type explicitly (--weight-dtype)")
    return out


def _compressed_fp8(qc: Cfg) -> bool:
    """compressed-tensors whose every weight group is 8-bit float (e.g. "FP8-dynamic")."""
    groups = qc.data.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        return False
    for group in groups.values():
        weights = group.get("weights") if isinstance(group, dict) else None
        if not isinstance(weights, dict) or weights.get("num_bits") != 8 or weights.get("type") != "float":
            return False
    return True


def with_weight_dtype(section: dict, weight_dtype: str) -> dict:
    """The model with its weights in ``weight_dtype`` ('mxfp4': routed experts only)."""
    out = dict(section)
    if weight_dtype == "mxfp4":
        out["expert_weight_dtype"] = "mxfp4"
        if out["weight_dtype"] == "mxfp4":
            out["weight_dtype"] = "bf16"
    else:
        out["weight_dtype"], out["expert_weight_dtype"] = weight_dtype, None
    return ModelSpec.model_validate(out).model_dump()
