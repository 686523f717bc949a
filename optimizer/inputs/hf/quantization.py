"""Weight and KV-cache data types of a HF checkpoint: ``torch_dtype`` (or ``dtype``) gives the
weights and the KV cache; ``quantization_config.quant_method`` "fp8" (or fbgemm_fp8,
compressed-tensors FP8) makes every linear projection FP8 (the embedding, LM head, router and
norms stay 16-bit: ``formulas.unquantized_dtype``; ``modules_to_not_convert`` is checked
against that), "mxfp4" makes the routed experts MXFP4. An explicit weight dtype replaces both."""

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
            _check_not_converted(qc)
        elif method == "mxfp4":
            out["expert_weight_dtype"] = "mxfp4"
        else:
            raise InputError(f"{root.source}: {qc.prefix}quant_method={method!r}: not supported "
                             f"(fp8, fbgemm_fp8, compressed-tensors FP8, mxfp4); give the weight "
                             f"type explicitly (--weight-dtype)")
    return out


# Modules an FP8 checkpoint may leave in 16 bits that moeopt already counts in 16 bits
# (formulas.unquantized_dtype): embedding, LM head, router ("gate", its score-correction bias),
# norms. Matched against the last part of a module name.
UNQUANTIZED_MODULES = ("lm_head", "embed_tokens", "gate", "router", "e_score_correction_bias")


def _check_not_converted(qc: Cfg) -> None:
    """``modules_to_not_convert`` (or ``ignored_layers``/``ignore``) of an FP8 checkpoint: every
    module it names must be one moeopt holds in 16 bits anyway; a linear projection left
    unconverted (e.g. attention) cannot be represented with one weight type."""
    for key in ("modules_to_not_convert", "ignored_layers", "ignore"):
        names = qc.data.get(key)
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            qc._bad(key, names, "must be a list of module names")
        for name in names:
            last = name.rsplit(".", 1)[-1]
            if last not in UNQUANTIZED_MODULES and "norm" not in last:
                raise InputError(f"{qc.source}: {qc.prefix}{key} names {name!r}: moeopt holds only the "
                                 f"embedding, LM head, router and norms in 16 bits under FP8 weights; "
                                 f"give the weight type explicitly (--weight-dtype bf16 or fp8)")


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
