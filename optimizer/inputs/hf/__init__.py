"""HuggingFace ``config.json`` -> a moeopt model section (``ModelSpec`` fields). Local files only:
nothing is downloaded, ever.

Families (dispatch on ``architectures[0]``, then ``model_type``; anything else falls back to
generic field names): Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek (V1 GQA, V2/V3 MLA), OLMoE,
GPT-OSS, DBRX, Phi-3.5-MoE, Llama-4 (``text_config``). Every field read is named in the
error when it is missing or has the wrong type (``InputError``, exit 2).

Counting conventions (docs/models.md): gated FFNs (3 matrices) for every family
here; DeepSeek-V3's multi-token-prediction module and Llama-4's vision encoder are not part
of the deployed decoder and are reported apart by ``hf_extra_params``.

Weight types: ``torch_dtype`` (or ``dtype``) gives the weights and the KV cache;
``quantization_config.quant_method`` "fp8" makes every weight FP8 (DeepSeek-V3's native
checkpoint), "mxfp4" makes the routed experts MXFP4 (GPT-OSS). An explicit ``weight_dtype``
argument replaces both.

Modules, one job each:
- ``config``: ``Cfg``, typed field accessors with named errors, and ``HF_INT_CAPS``;
- ``families``: family detection (``family_of``) and the per-family field mapping;
- ``quantization``: weight/KV dtypes from ``torch_dtype`` and ``quantization_config``;
- ``convert``: the entry points (``model_from_hf_config``, ``load_model_section``);
- ``extra_params``: parameters outside the decoder (``hf_extra_params``);
- ``sizing``: weight-only GPU sizing for ``init``/``inspect``.
"""

from optimizer.inputs.hf.config import HF_INT_CAPS, Cfg
from optimizer.inputs.hf.convert import is_hf_config, load_model_section, model_from_hf_config
from optimizer.inputs.hf.extra_params import hf_extra_params
from optimizer.inputs.hf.families import ARCHITECTURES, FAMILIES, HF_LAYER_TYPES, family_of
from optimizer.inputs.hf.quantization import DEFAULT_DTYPE, TORCH_DTYPES, WEIGHT_DTYPES, with_weight_dtype
from optimizer.inputs.hf.sizing import min_gpus_for_weights, usable_memory_gb

__all__ = [
    "ARCHITECTURES", "Cfg", "DEFAULT_DTYPE", "FAMILIES", "HF_INT_CAPS", "HF_LAYER_TYPES",
    "TORCH_DTYPES", "WEIGHT_DTYPES", "family_of", "hf_extra_params", "is_hf_config",
    "load_model_section", "min_gpus_for_weights", "model_from_hf_config", "usable_memory_gb",
    "with_weight_dtype",
]
