"""``moeopt inspect PATH``: model facts (parameters, bytes, FLOPs, KV) for an instance, a
HuggingFace config.json or a moeopt model JSON; with an instance, also what its GPUs hold."""

from __future__ import annotations

import click

from optimizer.cli.common import VERBOSE, dump, run

DEFAULT_PROMPT_TOKENS = 4096  # prompt length for FLOPs when PATH is not an instance

FORMAT = click.option("--format", "format_", type=click.Choice(["table", "json"]), default="table",
                      show_default=True, help="stdout format")


def model_facts(m, prompt_tokens: int, context_tokens: int | None = None) -> dict:
    """Every figure inspect prints about a model (ModelSpec), floats in SI units."""
    from optimizer.costs import formulas as cm
    context = context_tokens or prompt_tokens
    moe = m.moe_layer_ids
    sliding = [l for l in range(m.num_layers) if m.is_sliding(l)]
    kv_seq = sum(cm.kv_bytes_per_token_layer(m, 1) * cm.kv_tokens(m, l, context) for l in range(m.num_layers))
    total, embedding = cm.total_params(m), cm.embedding_params(m)
    return {
        "name": m.name,
        "total_params": total,
        "active_params": cm.active_params(m),
        "active_params_no_embedding": cm.active_params_no_embedding(m),
        "embedding_params": embedding,
        "non_embedding_params": total - embedding,
        "routed_expert_params": cm.routed_expert_params_total(m),
        "params_per_expert": cm.expert_params(m),
        "weight_bytes": cm.weight_bytes(m),
        "bytes_per_expert": cm.expert_bytes(m),
        "weight_dtype": m.weight_dtype,
        "expert_weight_dtype": m.expert_weight_dtype or m.weight_dtype,
        "kv_dtype": m.kv_dtype,
        "attention": m.attention,
        "kv_cache_bytes_per_token": cm.kv_bytes_per_token(m),
        "kv_cache_bytes_per_sequence": kv_seq,
        "context_tokens": context,
        "prefill_flops_per_token": cm.prefill_flops_per_token(m, prompt_tokens),
        "prompt_tokens": prompt_tokens,
        "lm_head_flops_per_sequence": cm.lm_head_flops_per_sequence(m),
        "num_layers": m.num_layers,
        "num_moe_layers": len(moe),
        "num_dense_layers": m.num_layers - len(moe),
        "num_sliding_layers": len(sliding),
        "sliding_window": m.sliding_window if sliding else None,
        "num_experts": m.num_experts,
        "top_k": m.top_k,
        "shared_expert_ffn_size": m.shared_expert_ffn_size,
    }


def lengths(inst, path: str | None = None) -> tuple[int, int]:
    """(prompt, output) tokens: the batch's, or a service's mean lengths (its trace's, read
    relative to the instance file at ``path``)."""
    wl = inst.workload
    if wl.kind == "service":
        from optimizer.costs.serving.replica import service_load
        from optimizer.inputs.service import load_trace
        load = service_load(wl, load_trace(wl, path) if path is not None and wl.trace else None)
        return load.prompt_tokens, load.output_tokens
    return wl.prompt_tokens, wl.output_tokens


def instance_facts(inst, path: str | None = None) -> dict:
    """What the instance's GPUs must hold: weights spread over every GPU (a lower bound, no
    KV, activations or buffers), the fewest GPUs whose memory holds the weights, and the KV
    cache of the whole batch at prompt + output tokens (a service: of one request at its
    mean lengths)."""
    from optimizer.costs import formulas as cm
    from optimizer.inputs.hf import min_gpus_for_weights, usable_memory_gb
    hw, wl = inst.hardware, inst.workload
    limit = inst.memory_limit_gb
    usable = usable_memory_gb(limit, hw.runtime_reserve_gb, hw.nccl_buffer_gb)
    weights = cm.weight_bytes(inst.model)
    per_gpu = weights / hw.num_gpus / 1e9
    prompt, output = lengths(inst, path)
    context = prompt + output
    sequences = wl.batch_sequences if wl.kind == "batch" else 1
    kv_batch = sequences * sum(cm.kv_bytes_per_token_layer(inst.model, 1) * cm.kv_tokens(inst.model, l, context)
                                        for l in range(inst.model.num_layers))
    return {
        "instance": inst.name,
        "gpu": hw.gpu.name,
        "num_gpus": hw.num_gpus,
        "memory_limit_gb_per_gpu": limit,
        "usable_memory_gb_per_gpu": round(usable, 6),
        "weights_gb_per_gpu_spread": round(per_gpu, 6),
        "weights_fit": per_gpu <= usable,
        "min_gpus_for_weights": min_gpus_for_weights(weights, usable),
        "batch_sequences": wl.batch_sequences if wl.kind == "batch" else None,
        "output_tokens": output,
        "kv_cache_gb_batch": round(kv_batch / 1e9, 6),
        "peak_tflops": hw.gpu.peak_tflops,
    }


def inspect_path(path: str, prompt_tokens: int | None = None) -> dict:
    """The inspect document for an instance, a HF config.json or a moeopt model JSON."""
    from pydantic import ValidationError

    from optimizer.errors import InputError
    from optimizer.inputs.files import validation_message
    from optimizer.inputs.hf import family_of, hf_extra_params, load_model_section
    from optimizer.inputs.schema import Instance, ModelSpec

    kind, section, inst_doc = load_model_section(path)
    m = ModelSpec.model_validate(section)
    doc: dict = {"source": kind}
    inst = None
    if kind == "instance":
        try:
            inst = Instance.model_validate(inst_doc)
        except ValidationError as exc:
            raise InputError(validation_message(f"instance {path}", exc)) from None
    if inst is not None and prompt_tokens is None:
        prompt, output = lengths(inst, path)
        context, origin = prompt + output, "instance"
    else:
        prompt = prompt_tokens or DEFAULT_PROMPT_TOKENS
        context = prompt + (lengths(inst, path)[1] if inst is not None else 0)
        origin = "--prompt-tokens" if prompt_tokens else "default"
    doc.update(model_facts(m, prompt, context))
    doc["prompt_tokens_from"] = origin
    if kind == "hf":
        from optimizer.inputs.files import read_json
        config = read_json(path, "config")
        doc["family"] = family_of(config)[1]
        extra = hf_extra_params(config)
        if extra:
            doc["not_deployed_params"] = extra
    if inst is not None:
        doc.update(instance_facts(inst, path))
    return doc


def _human(key: str, value) -> str:
    """A readable second rendering of a number (B parameters, GB, GFLOP), or ''."""
    if isinstance(value, dict):
        return ", ".join(f"{v / 1e9:.2f} B" for v in value.values())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    if "params" in key and value >= 1e8:
        return f"{value / 1e9:.2f} B"
    if "bytes" in key:
        return f"{value / 1e9:.3f} GB" if value >= 1e8 else f"{value / 1e3:.1f} kB"
    if key.endswith("_flops_per_token") or key.endswith("_flops_per_sequence"):
        return f"{value / 1e9:.3f} GFLOP"
    return ""


def _plain(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1e4:
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 1e4 else f"{value:g}"
    return ""


def render_table(doc: dict) -> str:
    width = max(len(k) for k in doc)
    lines = []
    for key, value in doc.items():
        human = _human(key, value)
        lines.append(f"{key:<{width}}  {_plain(value)}{'  (' + human + ')' if human else ''}".rstrip())
    return "\n".join(lines) + "\n"


@click.command("inspect", help=(
    "Model facts for PATH (an instance, a HuggingFace config.json or a moeopt model JSON): "
    "parameters (total; active with embedding and head; active without the input embedding), "
    "weight bytes, KV-cache bytes per token, prefill FLOPs per prompt token (at the instance's "
    f"prompt length, else {DEFAULT_PROMPT_TOKENS} tokens), layers, experts, top-k. With an "
    "instance: weights per GPU when spread over all GPUs and the fewest GPUs that hold them."))
@click.argument("path", type=click.Path(dir_okay=True))
@FORMAT
@click.option("--prompt-tokens", type=click.IntRange(1, 10**7), default=None,
              help=f"prompt length for FLOPs (default: the instance's, else {DEFAULT_PROMPT_TOKENS})")
@VERBOSE
def command(path, format_, prompt_tokens, verbose):
    def body():
        doc = inspect_path(path, prompt_tokens)
        click.echo(dump(doc) if format_ == "json" else render_table(doc), nl=False)
    run(verbose, body)
