"""Input schema: the instance file (model, hardware, workload, requirements, load, search).

Pydantic lives only at the edges (this module and ``plan.py``); everything inside the
optimizer works on the validated, frozen objects. Every numeric field carries its unit in
its name. Unknown keys are rejected so that a typo never silently falls back to a default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    TypeAdapter,
    WrapValidator,
    model_serializer,
    model_validator,
)

from optimizer.inputs.names import Label, ResultName

# MXFP4: 4-bit elements plus one 8-bit scale per 32 elements = 4.25 bits per parameter.
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0,
                                 "mxfp4": 4.25 / 8}
Dtype = Literal["fp32", "fp16", "bf16", "fp8", "mxfp4"]
# The MoE token exchange a runtime runs (hardware.moe_token_exchange; docs/cost-model.md §1.5).
MoeTokenExchange = Literal["deepep", "allgather"]
# Physical quantities stay within 1e-6 .. 1e9 of their unit so that integer scaling
# (ns, bytes) can neither overflow nor collapse to zero.
PositiveFloat = Annotated[float, Field(ge=1e-6, le=1e9, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
# Sizes above this are not models of this world and would overflow the integer scaling.
Big = Annotated[int, Field(gt=0, le=10**9)]
# Sizes that drive memory and time (lists and tables per layer, per expert, per head) are
# capped far above real models and far below what would exhaust memory: DeepSeek-V3 has 61
# layers, 128 heads and 256 experts, Qwen3-235B 94 layers, Kimi-K2 384 experts.
MAX_LAYERS = 1024
MAX_EXPERTS = 4096
MAX_HEADS = 1024
MAX_MICRO_BATCHES = 4096  # micro-batch counts, and entries of workload.micro_batches
Layers = Annotated[int, Field(gt=0, le=MAX_LAYERS)]
Experts = Annotated[int, Field(gt=0, le=MAX_EXPERTS)]
Heads = Annotated[int, Field(gt=0, le=MAX_HEADS)]


class _Strict(BaseModel):
    # strict: "4096" or true where a number belongs is an error, not a silent conversion
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelSpec(_Strict):
    """A decoder-only transformer with Mixture-of-Experts FFN layers.

    Defaults describe a plain MHA/GQA model whose every layer is MoE; the optional fields
    cover Mixtral, Qwen2/3-MoE, DeepSeek-V2/V3 (MLA, shared experts, first dense layers),
    OLMoE, GPT-OSS (biases, sinks, sliding layers, MXFP4 experts), DBRX, Phi-MoE, Llama-4.
    """

    name: Label = Field("", description="free-form model name (printable, at most 200 characters)")
    num_layers: Layers = Field(..., description=f"transformer layers (at most {MAX_LAYERS})")
    hidden_size: Big = Field(..., description="model width h")
    num_attention_heads: Heads = Field(..., description=f"query heads n_h (at most {MAX_HEADS})")
    num_kv_heads: Heads = Field(
        ..., description=f"key/value heads n_kv (MHA: = n_h; MLA: = n_h; at most {MAX_HEADS})")
    head_dim: Big = Field(..., description="size of one attention head d_h (MLA: v_head_dim)")
    num_experts: Experts = Field(..., description=f"routed experts per MoE layer E (at most {MAX_EXPERTS})")
    top_k: Experts = Field(..., description="experts chosen per token k (at most num_experts)")
    expert_ffn_size: Big = Field(..., description="FFN hidden size f of one routed expert")
    ffn_matrices: Literal[2, 3] = Field(2, description="2 = plain (up, down), 3 = gated (SwiGLU)")
    vocab_size: Big = Field(..., description="vocabulary size V")
    tie_word_embeddings: bool = Field(False, description="LM head shares the embedding")
    weight_dtype: Dtype = Field("fp16", description="data type of the weights")
    expert_weight_dtype: Dtype | None = Field(None, description="routed experts' type (default: weight_dtype)")
    kv_dtype: Dtype = Field("fp16", description="data type of the KV cache")
    moe_layers: Annotated[list[Annotated[int, Field(ge=0, lt=MAX_LAYERS)]], Field(max_length=MAX_LAYERS)] | None = Field(
        None, description="indices of the MoE layers; None = every layer")
    dense_ffn_size: Annotated[int, Field(ge=0, le=10**9)] = Field(0, description="FFN size of dense layers")
    shared_expert_ffn_size: Annotated[int, Field(ge=0, le=10**9)] = Field(
        0, description="total FFN size of the shared expert(s) of an MoE layer")
    shared_expert_gate: bool = Field(False, description="a sigmoid gate (h weights) on the shared expert")
    router_bias: bool = Field(False, description="E router biases (or a score-correction bias)")
    expert_bias: bool = Field(False, description="biases inside each expert's matrices")
    attention: Literal["gqa", "mla"] = Field("gqa", description="MHA/GQA, or multi-head latent attention")
    q_lora_rank: Annotated[int, Field(ge=0, le=10**6)] = Field(0, description="MLA: query rank (0 = full q_proj)")
    kv_lora_rank: Annotated[int, Field(ge=0, le=10**6)] = Field(0, description="MLA: latent KV rank d_c")
    qk_rope_head_dim: Annotated[int, Field(ge=0, le=10**6)] = Field(0, description="MLA: rotary part per head")
    qk_nope_head_dim: Annotated[int, Field(ge=0, le=10**6)] = Field(0, description="MLA: non-rotary q/k per head")
    qkv_bias: bool = Field(False, description="biases on q, k, v projections")
    o_bias: bool = Field(False, description="bias on the output projection")
    qk_norm: Literal["none", "per_head", "full"] = Field("none", description="q/k RMSNorm weights")
    attention_sinks: bool = Field(False, description="one learned sink logit per head and layer")
    sliding_window: Annotated[int, Field(gt=0, le=10**9)] | None = Field(None, description="window, tokens")
    layer_types: Annotated[list[Literal["full", "sliding"]], Field(max_length=MAX_LAYERS)] | None = Field(
        None, description="attention kind per layer; None = every layer full")
    norm: Literal["rmsnorm", "layernorm"] = Field("rmsnorm", description="LayerNorm has a bias too")
    lm_head_bias: bool = Field(False, description="bias on the LM head")

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads}")
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}")
        if self.moe_layers is not None:
            if not self.moe_layers:
                raise ValueError("moe_layers=[]: at least one layer must be MoE (moeopt plans "
                                 "Mixture-of-Experts models)")
            bad = [i for i in self.moe_layers if i >= self.num_layers]
            if bad or len(set(self.moe_layers)) != len(self.moe_layers):
                raise ValueError(f"moe_layers={self.moe_layers}: indices must be distinct and < "
                                 f"num_layers={self.num_layers}")
            if len(self.moe_layers) < self.num_layers and self.dense_ffn_size == 0:
                raise ValueError("dense_ffn_size=0 but some layers are not in moe_layers")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_layers:
                raise ValueError(f"layer_types has {len(self.layer_types)} entries, expected "
                                 f"num_layers={self.num_layers}")
            if "sliding" in self.layer_types and self.sliding_window is None:
                raise ValueError("layer_types has sliding layers but sliding_window is missing")
        if self.attention == "mla" and (self.kv_lora_rank == 0 or self.qk_nope_head_dim == 0):
            raise ValueError("attention='mla' needs kv_lora_rank and qk_nope_head_dim > 0")
        return self

    @property
    def moe_layer_ids(self) -> list[int]:
        """Indices of the MoE layers, increasing."""
        return sorted(self.moe_layers) if self.moe_layers is not None else list(range(self.num_layers))

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types is not None and self.layer_types[layer] == "sliding"


class GpuSpec(_Strict):
    """One GPU: peak dense FLOP/s, memory, HBM bandwidth and achieved fractions of both."""

    name: Label = Field("gpu", description="GPU name (printable, at most 200 characters)")
    peak_tflops: PositiveFloat = Field(..., description="peak dense TFLOP/s in the weight dtype")
    memory_gb: PositiveFloat = Field(..., description="HBM capacity, GB (1e9 B)")
    hbm_bandwidth_gb_s: PositiveFloat = Field(..., description="HBM bandwidth, GB/s")
    compute_efficiency: Fraction = Field(0.5, description="achieved fraction of peak FLOP/s")
    hbm_efficiency: Fraction = Field(0.8, description="achieved fraction of HBM bandwidth")


class HardwareSpec(_Strict):
    """The cluster: GPUs, nodes and the links between them (per-GPU bus bandwidths)."""

    num_gpus: Annotated[int, Field(gt=0, le=65536)] = Field(..., description="GPUs available")
    gpus_per_node: Annotated[int, Field(gt=0, le=1024)] = Field(8, description="GPUs per node")
    gpu: GpuSpec
    intra_node_bandwidth_gb_s: PositiveFloat = Field(..., description="NVLink per GPU, GB/s")
    inter_node_bandwidth_gb_s: PositiveFloat = Field(..., description="network per GPU, GB/s")
    pcie_bandwidth_gb_s: PositiveFloat = Field(32.0, description="host link (informational)")
    intra_node_latency_us: NonNegFloat = Field(5.0, description="per-step latency inside a node")
    inter_node_latency_us: NonNegFloat = Field(10.0, description="per-step latency across nodes")
    nccl_buffer_gb: NonNegFloat = Field(0.4, description="NCCL communicator memory per GPU")
    runtime_reserve_gb: NonNegFloat = Field(
        3.758, description="CUDA context, libraries, allocator slack per GPU (3.5 GiB)")
    profile: str | None = Field(
        None, description="hardware profile: a shipped name (optimizer/profiles/NAME.json, set by "
                          "hardware.preset) or a JSON path; None = flat efficiencies")
    moe_token_exchange: MoeTokenExchange = Field(
        "deepep", description="how the runtime moves tokens to the EP ranks of their experts: "
                              "'deepep' = DeepEP all-to-all (SGLang --moe-a2a-backend deepep), "
                              "'allgather' = NCCL all-gather of every EP rank's hidden states "
                              "before the experts and a reduce-scatter after them (SGLang's "
                              "default backend 'none', vLLM allgather_reducescatter, TensorRT-LLM "
                              "without wide EP)")

    kv_pool_runtime: Literal["sglang", "vllm", "trtllm"] | None = Field(
        None, description="size the KV cache as this runtime does from its memory fraction "
                          "(docs/cost-model.md, 'KV pool of a runtime'): the running-request cap "
                          "is also held to that pool; None = the pool fills the memory limit")
    kv_pool_memory_fraction: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = Field(
        None, description="the runtime's memory fraction (SGLang --mem-fraction-static, vLLM "
                          "--gpu-memory-utilization, TensorRT-LLM free_gpu_memory_fraction); "
                          "None = the runtime's default (0.88, 0.9, 0.9)")

    @model_validator(mode="after")
    def _fraction_needs_runtime(self) -> HardwareSpec:
        if self.kv_pool_memory_fraction is not None and self.kv_pool_runtime is None:
            raise ValueError(f"kv_pool_memory_fraction={self.kv_pool_memory_fraction!r} needs "
                             "kv_pool_runtime (the runtime whose rule the fraction is for)")
        return self

    @model_serializer(mode="wrap")
    def _omit_default_exchange(self, handler):
        data = handler(self)   # defaults are left out, so instances serialise as before
        if isinstance(data, dict):
            if data.get("moe_token_exchange") == "deepep":
                data.pop("moe_token_exchange")
            for key in ("kv_pool_runtime", "kv_pool_memory_fraction"):
                if data.get(key) is None:
                    data.pop(key, None)
        return data


class Workload(_Strict):
    """A static batch: all sequences arrive together, are prefilled as one batch, then
    (with output_tokens > 0) decode together, one token per sequence per step."""

    # excluded from dumps: a batch workload serialises exactly as before "kind" existed
    kind: Literal["batch"] = Field("batch", exclude=True, description="a static batch (default)")
    batch_sequences: Annotated[int, Field(gt=0, le=10**7)] = Field(..., description="sequences")
    prompt_tokens: Annotated[int, Field(gt=0, le=10**7)] = Field(..., description="per sequence")
    output_tokens: Annotated[int, Field(ge=0, le=10**7)] = Field(
        0, description="generated tokens per sequence (0 = prefill only)")
    micro_batches: list[PositiveInt] | None = Field(
        None, description="allowed micro-batch counts; None = every divisor the solver likes")
    moe_buffer_factor: Annotated[float, Field(ge=1, le=64, allow_inf_nan=False)] = Field(
        1.25, description="MoE dispatch buffers are sized at this multiple of the mean load")


TokenCount = Annotated[int, Field(gt=0, le=10**7)]


class UniformTokens(_Strict):
    """Lengths drawn uniformly from the integers min_tokens..max_tokens."""

    kind: Literal["uniform"]
    min_tokens: TokenCount
    max_tokens: TokenCount

    @model_validator(mode="after")
    def _ordered(self) -> UniformTokens:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens={self.min_tokens} exceeds max_tokens={self.max_tokens}")
        return self


class LogNormalTokens(_Strict):
    """Lengths round(X), X lognormal with mean mean_tokens and log-space deviation sigma,
    clipped to min_tokens..max_tokens."""

    kind: Literal["lognormal"]
    mean_tokens: Annotated[float, Field(ge=1, le=1e7, allow_inf_nan=False)]
    sigma: Annotated[float, Field(gt=0, le=4, allow_inf_nan=False)] = 1.0
    min_tokens: TokenCount = 1
    max_tokens: TokenCount = 10**7


class ExponentialTokens(_Strict):
    """Lengths round(X), X exponential with mean mean_tokens, clipped to min..max_tokens."""

    kind: Literal["exponential"]
    mean_tokens: Annotated[float, Field(ge=1, le=1e7, allow_inf_nan=False)]
    min_tokens: TokenCount = 1
    max_tokens: TokenCount = 10**7


_DISTRIBUTIONS = {"uniform": UniformTokens, "lognormal": LogNormalTokens,
                  "exponential": ExponentialTokens}
_TOKEN_COUNT = TypeAdapter(TokenCount, config=ConfigDict(strict=True))


def _length(value, handler):
    """A token count, or a distribution chosen by its ``kind`` (errors keep the field's
    own path: no union member names in them)."""
    if isinstance(value, (int, *_DISTRIBUTIONS.values())) and not isinstance(value, bool):
        return _TOKEN_COUNT.validate_python(value) if isinstance(value, int) else value
    if isinstance(value, dict):
        cls = _DISTRIBUTIONS.get(value.get("kind"))
        if cls is None:
            raise ValueError(f"kind={value.get('kind')!r}: expected one of "
                             f"{', '.join(_DISTRIBUTIONS)}")
        return cls.model_validate(value)
    raise ValueError("expected a token count or a distribution object")


TokenLength = Annotated[TokenCount | UniformTokens | LogNormalTokens | ExponentialTokens,
                        WrapValidator(_length)]


class ServiceWorkload(_Strict):
    """A service: requests arrive over time (Poisson at arrival_rate_rps, a closed loop of
    concurrency users, or the times of a trace), each with its own prompt and output length.
    A trace (CSV or JSONL rows of arrival_s, prompt_tokens, output_tokens; path relative
    to the instance file) replaces the two lengths; with arrival_rate_rps its times are
    rescaled to that mean rate, with concurrency they are ignored."""

    kind: Literal["service"]
    arrival_rate_rps: Annotated[float, Field(gt=0, le=1e7, allow_inf_nan=False)] | None = Field(
        None, description="mean request arrival rate, requests/s (Poisson)")
    concurrency: Annotated[int, Field(gt=0, le=10**7)] | None = Field(
        None, description="closed loop: this many users, each sending on the last reply")
    prompt_tokens: TokenLength | None = Field(None, description="prompt length, tokens")
    output_tokens: TokenLength | None = Field(
        None, description="generated tokens per request (the first one included)")
    trace: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        None, description="CSV/JSONL file of arrival_s, prompt_tokens, output_tokens rows")
    moe_buffer_factor: Annotated[float, Field(ge=1, le=64, allow_inf_nan=False)] = Field(
        1.25, description="MoE dispatch buffers are sized at this multiple of the mean load")

    @model_validator(mode="after")
    def _complete(self) -> ServiceWorkload:
        if self.arrival_rate_rps is not None and self.concurrency is not None:
            raise ValueError("give arrival_rate_rps or concurrency, not both")
        if self.trace is None:
            if self.arrival_rate_rps is None and self.concurrency is None:
                raise ValueError("a service needs arrival_rate_rps, concurrency or a trace")
            missing = [k for k in ("prompt_tokens", "output_tokens") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"{missing[0]} is missing (an integer, a distribution, or a trace)")
        elif self.prompt_tokens is not None or self.output_tokens is not None:
            raise ValueError("a trace gives the lengths: drop prompt_tokens/output_tokens")
        return self


def _workload(value, handler):
    """A batch when ``kind`` is absent (every instance written before services), else the
    class its ``kind`` names (errors keep the field's own path)."""
    if isinstance(value, (Workload, ServiceWorkload)):
        return value
    if isinstance(value, dict):
        kind = value.get("kind", "batch")
        if kind not in ("batch", "service"):
            raise ValueError(f"kind={kind!r}: expected 'batch' or 'service'")
        return (ServiceWorkload if kind == "service" else Workload).model_validate(value)
    return Workload.model_validate(value)  # its own error: not an object


AnyWorkload = Annotated[Workload | ServiceWorkload, WrapValidator(_workload)]

# Requirements of a service only; absent ones are left out of dumps (batch instances
# serialise exactly as before).
SERVICE_REQUIREMENTS = ("latency_percentile", "max_e2e_latency_s", "min_goodput_rps")


class Requirements(_Strict):
    """Service requirements; a missing one is not enforced."""

    min_throughput_tokens_per_ms: NonNegFloat | None = Field(None, description="tokens/ms")
    throughput_scope: Literal["deployment", "per_gpu"] = Field(
        "deployment", description="whether the throughput target is for all GPUs or each")
    max_ttft_s: PositiveFloat | None = Field(None, description="TTFT must be strictly below")
    max_tpot_ms: PositiveFloat | None = Field(
        None, description="time per output token (one decode step) must be at most this")
    max_memory_gb: PositiveFloat | None = Field(
        None, description="memory per GPU; default: the GPU's memory_gb")
    latency_percentile: Literal[50, 90, 99] | None = Field(
        None, description="service: TTFT/TPOT/E2E targets hold at this percentile (default 90)")
    max_e2e_latency_s: PositiveFloat | None = Field(
        None, description="service: request latency, arrival to last token, s")
    min_goodput_rps: PositiveFloat | None = Field(
        None, description="service: requests/s that meet every latency target")

    @property
    def percentile(self) -> int:
        """The latency percentile targets are judged at (90 unless given)."""
        return 90 if self.latency_percentile is None else self.latency_percentile

    @model_serializer(mode="wrap")
    def _omit_absent_service_fields(self, handler):
        data = handler(self)
        for key in SERVICE_REQUIREMENTS:
            if isinstance(data, dict) and data.get(key) is None:
                data.pop(key, None)
        return data


class UniformLoad(_Strict):
    kind: Literal["uniform"]


class PowerLawLoad(_Strict):
    """Per layer, expert i of a seeded random order gets weight (i+1)^-a_l (a_l near exponent)."""

    kind: Literal["power_law"]
    exponent: Annotated[float, Field(ge=0, le=8, allow_inf_nan=False)] = 0.6
    seed: Annotated[int, Field(ge=0, le=2**31)] = 0


class CountsLoad(_Strict):
    """Measured routed-token counts: [num_layers][num_experts], non-negative integers."""

    kind: Literal["counts"]
    counts: Annotated[list[Annotated[list[Annotated[int, Field(ge=0, le=10**15)]],
                                     Field(max_length=MAX_EXPERTS)]], Field(max_length=MAX_LAYERS)]


class FileLoad(_Strict):
    """Measured loads in a file (SGLang recorder JSON, CSV layer,expert,tokens, or .npy; see
    ``moeopt place``); a relative path is taken from the current directory. All-zero rows
    (dense layers) are dropped; one row per MoE layer must remain."""

    kind: Literal["file"]
    path: Annotated[str, Field(min_length=1, max_length=4096)]


ExpertLoad = Annotated[UniformLoad | PowerLawLoad | CountsLoad | FileLoad, Field(discriminator="kind")]


class SearchSpec(_Strict):
    """Solver settings (command-line options override them)."""

    max_micro_batches: Annotated[int, Field(gt=0, le=MAX_MICRO_BATCHES)] = 32
    time_limit_s: PositiveFloat = 60.0
    # CP-SAT workers; 0: automatic (2 for models over many configurations, else 1)
    workers: Annotated[int, Field(ge=0, le=64)] = 0
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0  # CP-SAT's random_seed is an int32
    redundant_experts: Annotated[int, Field(ge=0, le=4096)] | None = Field(
        None, description="replicated expert slots per MoE layer, placed after the solve by "
                          "the placement engine on the chosen EP degree (solve --redundant-experts)")
    current_placement: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        None, description="the expert placement in service (a moeopt placement, a plan file or an "
                          "SGLang/vLLM expert-location map), relative to the instance file: the "
                          "plan moves the fewest experts from it (solve --current)")

    @model_serializer(mode="wrap")
    def _omit_absent_redundant(self, handler):
        data = handler(self)   # absent: left out, so instances serialise as before
        if isinstance(data, dict):
            for key in ("redundant_experts", "current_placement"):
                if data.get(key) is None:
                    data.pop(key, None)
        return data


class Instance(_Strict):
    """One deployment question. ``hardware`` may name a GPU preset and override any field:
    ``{"preset": "h100-sxm", "num_gpus": 16}``."""

    name: ResultName = Field(..., description="instance name; results go to results/<name>/ "
                             "(1-128 letters, digits, '_', '.', '-')")
    model: ModelSpec
    hardware: HardwareSpec
    workload: AnyWorkload
    requirements: Requirements = Requirements()
    expert_load: ExpertLoad = UniformLoad(kind="uniform")
    search: SearchSpec = SearchSpec()

    @model_validator(mode="before")
    @classmethod
    def _hardware_preset(cls, data):
        """Expand ``hardware.preset`` (peak FLOPS chosen by the model's weight type)."""
        from optimizer.inputs.presets import GPU_PRESETS, expand_hardware
        if isinstance(data, dict) and isinstance(data.get("hardware"), dict) and "preset" in data["hardware"]:
            name = data["hardware"]["preset"]
            if not isinstance(name, str) or name not in GPU_PRESETS:
                raise ValueError(f"hardware.preset={name!r}: unknown; known: {', '.join(GPU_PRESETS)}")
            model = data.get("model") if isinstance(data.get("model"), dict) else {}
            dtype = model.get("expert_weight_dtype") or model.get("weight_dtype", "fp16")
            data = {**data, "hardware": expand_hardware(data["hardware"], str(dtype))}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Instance:
        # checked here rather than in Workload: at most MAX_MICRO_BATCHES allowed counts
        allowed = getattr(self.workload, "micro_batches", None)  # a service has none
        if allowed is not None and len(allowed) > MAX_MICRO_BATCHES:
            raise ValueError(f"workload.micro_batches has {len(allowed)} entries; at most "
                             f"{MAX_MICRO_BATCHES}")
        if isinstance(self.expert_load, CountsLoad):
            shape = (len(self.expert_load.counts), {len(r) for r in self.expert_load.counts})
            moe = len(self.model.moe_layer_ids)
            if shape[0] != moe or shape[1] != {self.model.num_experts}:
                raise ValueError(
                    f"expert_load.counts has shape {shape[0]}x{sorted(shape[1])}, "
                    f"expected {moe} MoE layers x {self.model.num_experts} experts")
            if any(sum(r) == 0 for r in self.expert_load.counts):
                raise ValueError("expert_load.counts has a layer whose counts are all zero")
        return self

    @property
    def memory_limit_gb(self) -> float:
        """Memory each GPU may use: the requirement, else the GPU's capacity."""
        req = self.requirements.max_memory_gb
        return self.hardware.gpu.memory_gb if req is None else req
