"""Parameters a checkpoint holds outside the deployed text decoder (not in ``ModelSpec``):
DeepSeek-V3's multi-token-prediction module(s) and Llama-4's vision encoder with its
projector (docs/models.md)."""

from __future__ import annotations

from optimizer.inputs.hf.config import Cfg
from optimizer.inputs.hf.convert import model_from_hf_config
from optimizer.inputs.hf.families import family_of
from optimizer.inputs.schema import ModelSpec


def hf_extra_params(config: dict) -> dict[str, int]:
    """Parameters a checkpoint holds beyond the deployed text decoder (not in ModelSpec):
    DeepSeek-V3's multi-token-prediction module(s) (``mtp_params``: one MoE decoder layer,
    eh_proj 2h x h and three norms each; embedding and head shared) and Llama-4's vision
    encoder with its projector (``vision_params``)."""
    import optimizer.costs.formulas as cm
    out: dict[str, int] = {}
    key, _ = family_of(config)
    if key in ("deepseek_v2", "deepseek_v3") and isinstance(config.get("num_nextn_predict_layers"), int) \
            and config["num_nextn_predict_layers"] > 0:
        m = ModelSpec.model_validate(model_from_hf_config(config))
        h = m.hidden_size
        moe_layer = m.moe_layer_ids[-1]
        per = cm.layer_params(m, moe_layer) + 2 * h * h + 3 * h
        out["mtp_params"] = config["num_nextn_predict_layers"] * per
    vc = config.get("vision_config")
    if key == "llama4" and isinstance(vc, dict) and isinstance(config.get("text_config"), dict):
        out["vision_params"] = _llama4_vision_params(Cfg(vc, "config.json", "Llama-4 vision", "vision_config."),
                                                     Cfg(config["text_config"], "config.json", "Llama-4",
                                                         "text_config.").int("hidden_size"))
    return out


def _llama4_vision_params(v: Cfg, text_hidden: int) -> int:
    """Llama-4 vision tower (ViT with biased attention/MLP and LayerNorms), pixel-shuffle
    adapter MLP and the projector into the text width."""
    h, L, f = v.int("hidden_size"), v.int("num_hidden_layers"), v.int("intermediate_size")
    patch, image, ch = v.int("patch_size"), v.int("image_size"), v.int("num_channels", 3)
    layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
    patches = (image // patch) ** 2
    tower = L * layer + ch * patch * patch * h + h + (patches + 1) * h + 4 * h
    ratio = v.data.get("pixel_shuffle_ratio", 0.5)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
        v._bad("pixel_shuffle_ratio", ratio, "must be a positive number")
    shuffle = int(round(h / (ratio * ratio)))  # channels after pixel shuffle
    adapter = shuffle * v.int("projector_input_dim") + v.int("projector_input_dim") * v.int("projector_output_dim")
    projector = v.int("vision_output_dim") * text_hidden
    return tower + adapter + projector
