"""``moeopt init --model M --gpu PRESET --gpus N --output PATH``: a complete instance file from a
model (HuggingFace config.json, moeopt model JSON or an instance), a GPU preset and the workload
and requirement options; written atomically and validated before it is written."""

from __future__ import annotations

import re
from pathlib import Path

import click

from optimizer.cli.common import VERBOSE, OutputPath, dump, run
from optimizer.inputs.hf import WEIGHT_DTYPES
from optimizer.inputs.presets import GPU_PRESETS

DTYPE_CHOICES = ("fp32", "fp16", "bf16", "fp8", "mxfp4")
DEFAULTS = {"batch": 32, "prompt_tokens": 4096, "output_tokens": 0}


def build_instance(model: dict, *, name: str, gpu: str, gpus: int, batch: int = DEFAULTS["batch"],
                   prompt_tokens: int = DEFAULTS["prompt_tokens"],
                   output_tokens: int = DEFAULTS["output_tokens"], kv_dtype: str | None = None,
                   max_ttft_s: float | None = None, max_tpot_ms: float | None = None,
                   min_throughput_tokens_per_ms: float | None = None,
                   throughput_scope: str = "deployment", max_memory_gb: float | None = None,
                   hardware_overrides: dict | None = None, service: dict | None = None) -> dict:
    """An instance dict (hardware as ``{"preset": gpu, "num_gpus": gpus}``) validated as an
    Instance; errors are one-line InputErrors naming the option or field. ``service``: the
    service options given (arrival_rate_rps, concurrency, trace, latency_percentile,
    max_e2e_latency_s, min_goodput_rps; None values left out): with a rate, a concurrency or
    a trace the workload is a service (``batch`` is then not used)."""
    from pydantic import ValidationError

    from optimizer.errors import InputError
    from optimizer.inputs.files import validation_message
    from optimizer.inputs.presets import GPU_PRESETS
    from optimizer.inputs.schema import Instance, ModelSpec, SearchSpec

    if gpu not in GPU_PRESETS:
        raise InputError(f"--gpu={gpu!r}: unknown GPU preset; known: {', '.join(GPU_PRESETS)}")
    model = dict(model)
    if kv_dtype is not None:
        model["kv_dtype"] = kv_dtype
    model = ModelSpec.model_validate(model).model_dump()
    requirements: dict = {}
    if min_throughput_tokens_per_ms is not None:
        requirements["min_throughput_tokens_per_ms"] = min_throughput_tokens_per_ms
    requirements["throughput_scope"] = throughput_scope
    for key, value in (("max_ttft_s", max_ttft_s), ("max_tpot_ms", max_tpot_ms),
                       ("max_memory_gb", max_memory_gb)):
        if value is not None:
            requirements[key] = value
    service = {k: v for k, v in (service or {}).items() if v is not None}
    workload: dict = {"batch_sequences": batch, "prompt_tokens": prompt_tokens,
                      "output_tokens": output_tokens}
    if {"arrival_rate_rps", "concurrency", "trace"} & service.keys():
        workload = {"kind": "service", "prompt_tokens": prompt_tokens, "output_tokens": output_tokens,
                    **{k: service[k] for k in ("arrival_rate_rps", "concurrency", "trace") if k in service}}
    for key in ("latency_percentile", "max_e2e_latency_s", "min_goodput_rps"):
        if key in service:
            requirements[key] = service[key]
    doc = {
        "name": name,
        "model": model,
        "hardware": {"preset": gpu, "num_gpus": gpus, **(hardware_overrides or {})},
        "workload": workload,
        "requirements": requirements,
        "expert_load": {"kind": "uniform"},
        "search": SearchSpec().model_dump(),
    }
    try:
        Instance.model_validate(doc)
    except ValidationError as exc:
        raise InputError(validation_message("instance", exc)) from None
    return doc


def default_name(output: str) -> str:
    """The instance name from the output file's stem, made a valid name."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(output).stem).lstrip("_.-")[:128]
    return stem or "instance"


def summary(doc: dict) -> str:
    """One line on what the GPUs must hold, for the message after writing."""
    from optimizer.costs import formulas as cm
    from optimizer.inputs.hf import min_gpus_for_weights, usable_memory_gb
    from optimizer.inputs.schema import Instance

    inst = Instance.model_validate(doc)
    hw = inst.hardware
    weights = cm.weight_bytes(inst.model)
    usable = usable_memory_gb(inst.memory_limit_gb, hw.runtime_reserve_gb, hw.nccl_buffer_gb)
    need = min_gpus_for_weights(weights, usable)
    line = (f"{inst.model.name or 'model'}: {cm.total_params(inst.model) / 1e9:.2f} B parameters, "
            f"{weights / 1e9:.2f} GB of weights; {hw.num_gpus} x {hw.gpu.name} "
            f"({usable:.1f} GB usable each)")
    if need > hw.num_gpus:
        line += f"; note: the weights alone need at least {need} GPUs, so solve will report infeasible"
    return line


@click.command("init", help=(
    "Write a complete instance to --output from --model (a HuggingFace config.json, a moeopt "
    "model JSON or an instance), a GPU preset (--gpu) and a GPU count; workload and requirement "
    f"options fill the rest (defaults: batch {DEFAULTS['batch']}, {DEFAULTS['prompt_tokens']} "
    "prompt tokens, no decode, no requirements). The file is validated before it is written."))
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=True),
              help="HuggingFace config.json, moeopt model JSON or instance JSON")
@click.option("--gpu", required=True, help=f"GPU preset: {', '.join(GPU_PRESETS)}")
@click.option("--gpus", type=click.IntRange(1, 65536), required=True, help="number of GPUs")
@click.option("--output", type=OutputPath(), required=True, help="instance JSON path ('-' = stdout)")
@click.option("--name", default=None, help="instance name (default: the output file's stem)")
@click.option("--weight-dtype", type=click.Choice(WEIGHT_DTYPES), default=None,
              help="weight type (mxfp4: routed experts only); default: the model's")
@click.option("--kv-dtype", type=click.Choice(DTYPE_CHOICES), default=None,
              help="KV-cache type; default: the model's")
@click.option("--batch", type=click.IntRange(1, 10**7), default=DEFAULTS["batch"], show_default=True,
              help="sequences in the static batch")
@click.option("--prompt-tokens", type=click.IntRange(1, 10**7), default=DEFAULTS["prompt_tokens"],
              show_default=True, help="prompt tokens per sequence")
@click.option("--output-tokens", type=click.IntRange(0, 10**7), default=DEFAULTS["output_tokens"],
              show_default=True, help="generated tokens per sequence (0 = prefill only)")
@click.option("--max-ttft-s", type=float, default=None, help="TTFT requirement, s")
@click.option("--max-tpot-ms", type=float, default=None, help="time per output token requirement, ms")
@click.option("--min-throughput-tokens-per-ms", type=float, default=None, help="throughput requirement")
@click.option("--throughput-scope", type=click.Choice(["deployment", "per_gpu"]), default="deployment",
              show_default=True, help="whether the throughput target is for all GPUs or each")
@click.option("--max-memory-gb", type=float, default=None, help="memory per GPU (default: the GPU's)")
@click.option("--arrival-rate-rps", type=float, default=None,
              help="service: Poisson arrivals, requests/s (writes a service instance)")
@click.option("--concurrency", type=click.IntRange(1, 10**7), default=None,
              help="service: closed loop of this many requests (writes a service instance)")
@click.option("--trace", default=None,
              help="service: CSV/JSONL trace of arrival_s,prompt_tokens,output_tokens, its path "
                   "relative to the instance file (writes a service instance)")
@click.option("--latency-percentile", type=click.Choice(["50", "90", "99"]), default=None,
              help="service: percentile the latency SLOs are judged at (default 90)")
@click.option("--max-e2e-latency-s", type=float, default=None, help="service: end-to-end latency SLO, s")
@click.option("--min-goodput-rps", type=float, default=None, help="service: goodput requirement, requests/s")
@VERBOSE
def command(model_path, gpu, gpus, output, name, weight_dtype, kv_dtype, batch, prompt_tokens,
            output_tokens, max_ttft_s, max_tpot_ms, min_throughput_tokens_per_ms, throughput_scope,
            max_memory_gb, arrival_rate_rps, concurrency, trace, latency_percentile, max_e2e_latency_s,
            min_goodput_rps, verbose):
    def body():
        from optimizer.errors import InputError
        from optimizer.inputs.files import write_atomic
        from optimizer.inputs.hf import load_model_section

        if gpu not in GPU_PRESETS:  # before reading the model: the cheaper error first
            raise InputError(f"--gpu={gpu!r}: unknown GPU preset; known: {', '.join(GPU_PRESETS)}")
        _, model, _ = load_model_section(model_path, weight_dtype=weight_dtype)
        doc = build_instance(
            model, name=name or default_name(output if output != "-" else "instance"), gpu=gpu,
            gpus=gpus, batch=batch, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
            kv_dtype=kv_dtype, max_ttft_s=max_ttft_s, max_tpot_ms=max_tpot_ms,
            min_throughput_tokens_per_ms=min_throughput_tokens_per_ms,
            throughput_scope=throughput_scope, max_memory_gb=max_memory_gb,
            service={"arrival_rate_rps": arrival_rate_rps, "concurrency": concurrency, "trace": trace,
                     "latency_percentile": None if latency_percentile is None else int(latency_percentile),
                     "max_e2e_latency_s": max_e2e_latency_s, "min_goodput_rps": min_goodput_rps})
        text = dump(doc)
        if output == "-":
            click.echo(text, nl=False)
            return
        write_atomic(output, text, "--output")
        click.echo(f"instance {doc['name']} written to {output}")
        click.echo(summary(doc))
    run(verbose, body)
