"""``moeopt import-hf CONFIG_JSON``: a moeopt model section from a local HuggingFace config.json."""

from __future__ import annotations

import click

from optimizer.cli.common import VERBOSE, OutputPath, dump, run
from optimizer.inputs.hf import WEIGHT_DTYPES

DTYPE_CHOICES = ("fp32", "fp16", "bf16", "fp8", "mxfp4")


@click.command("import-hf", help=(
    "Print the moeopt model section (every field of an instance's \"model\") read from a "
    "local HuggingFace config.json: Mixtral, Qwen2/3-MoE, DeepSeek-V2/V3, OLMoE, GPT-OSS, DBRX, "
    "Phi-3.5-MoE, Llama-4, else generic field names. Nothing is downloaded. Weight type from "
    "torch_dtype and quantization_config (fp8; mxfp4 = routed experts), KV type from torch_dtype."))
@click.argument("config_json", type=click.Path(dir_okay=True))
@click.option("--output", type=OutputPath(), default="-", show_default=True, help="model JSON path ('-' = stdout)")
@click.option("--name", default=None, help="model name (default: _name_or_path or the architecture)")
@click.option("--weight-dtype", type=click.Choice(WEIGHT_DTYPES), default=None,
              help="override the weight type (mxfp4: routed experts only)")
@click.option("--kv-dtype", type=click.Choice(DTYPE_CHOICES), default=None, help="override the KV-cache type")
@VERBOSE
def command(config_json, output, name, weight_dtype, kv_dtype, verbose):
    def body():
        from optimizer.inputs.files import read_json, write_atomic
        from optimizer.inputs.hf import model_from_hf_config
        from optimizer.inputs.schema import ModelSpec

        section = model_from_hf_config(read_json(config_json, "config"), name=name,
                                       weight_dtype=weight_dtype, source=str(config_json))
        if kv_dtype is not None:
            section = ModelSpec.model_validate({**section, "kv_dtype": kv_dtype}).model_dump()
        text = dump(section)
        if output == "-":
            click.echo(text, nl=False)
        else:
            write_atomic(output, text, "--output")
            click.echo(f"model written to {output}")
    run(verbose, body)
