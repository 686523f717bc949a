"""Entry points: a HF config dict -> a validated moeopt model section, and a model file of any
kind (instance, moeopt model, HF config) -> its model section. Local files only: nothing is
downloaded, ever."""

from __future__ import annotations

from pydantic import ValidationError

from optimizer.errors import InputError
from optimizer.inputs.files import read_json, validation_message
from optimizer.inputs.hf.config import Cfg
from optimizer.inputs.hf.families import FAMILIES, family_of, generic_fields
from optimizer.inputs.hf.quantization import dtype_fields, with_weight_dtype
from optimizer.inputs.schema import ModelSpec


def model_from_hf_config(config: dict, *, name: str | None = None, weight_dtype: str | None = None,
                         source: str = "config.json") -> dict:
    """A moeopt model section (every ModelSpec field, validated) from a HF config dict."""
    if not isinstance(config, dict):
        raise InputError(f"{source}: expected a JSON object, got {type(config).__name__}")
    key, label = family_of(config)
    root = Cfg(config, source, label)
    text = root.sub("text_config") if isinstance(config.get("text_config"), dict) else root
    fields = (FAMILIES[key][1] if key else generic_fields)(text)
    fields.update(dtype_fields(root, text, weight_dtype))
    fields["name"] = name or _default_name(config, label)
    try:
        return ModelSpec.model_validate(fields).model_dump()
    except ValidationError as exc:
        raise InputError(validation_message(f"model from {source}", exc)) from None


def _default_name(config: dict, label: str) -> str:
    path = config.get("_name_or_path")
    return path if isinstance(path, str) and path else label


def is_hf_config(doc: object) -> bool:
    """A HuggingFace config rather than a moeopt model or instance."""
    return isinstance(doc, dict) and "num_layers" not in doc and "model" not in doc and (
        "architectures" in doc or "model_type" in doc or "text_config" in doc)


def load_model_section(path: str, *, weight_dtype: str | None = None) -> tuple[str, dict, dict | None]:
    """(kind, model section, the instance dict or None) from an instance, a moeopt model JSON
    or a HF config.json. kind is 'instance', 'model' or 'hf'. HF configs are converted;
    moeopt models are validated (errors name the field)."""
    doc = read_json(path, "model file")
    if not isinstance(doc, dict):
        raise InputError(f"model file {path}: expected a JSON object, got {type(doc).__name__}")
    if is_hf_config(doc):
        return "hf", model_from_hf_config(doc, weight_dtype=weight_dtype, source=str(path)), None
    kind, inst, wrapped = "model", None, "model" in doc
    if wrapped:
        kind = "instance" if "hardware" in doc else "model"
        inst = doc if kind == "instance" else None
        doc = doc["model"]
    if not isinstance(doc, dict):
        raise InputError(f"model file {path}: model must be a JSON object")
    try:
        section = ModelSpec.model_validate(doc).model_dump()
    except ValidationError as exc:
        what = f"model file {path}"
        msg = validation_message(what, exc)
        if wrapped:  # name the field as it sits in the file
            msg = msg.replace(f"{what}: ", f"{what}: model.", 1)
        raise InputError(msg) from None
    if weight_dtype is not None:
        section = with_weight_dtype(section, weight_dtype)
    return kind, section, inst
