"""A HuggingFace ``config.json`` dict read field by field: typed accessors whose errors name the
field, its value and the rule (``InputError``, exit 2), and the caps on every field that sizes
something built later (layers, experts, heads)."""

from __future__ import annotations

from typing import Any

from optimizer.errors import InputError
from optimizer.inputs.schema import MAX_EXPERTS, MAX_HEADS, MAX_LAYERS

# Fields whose value sizes a list built here (one entry per layer) or a table downstream,
# capped when read, before anything is built: the schema's caps under every HF spelling.
HF_INT_CAPS: dict[str, int] = {
    **dict.fromkeys(("num_hidden_layers", "n_layers", "n_layer", "num_layers"), MAX_LAYERS),
    **dict.fromkeys(("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"),
                    MAX_EXPERTS),
    **dict.fromkeys(("num_attention_heads", "n_heads", "n_head", "num_heads", "num_key_value_heads",
                     "num_kv_heads", "kv_n_heads"), MAX_HEADS),
}


class Cfg:
    """A config dict with typed, named accessors; ``prefix`` is its path in the file."""

    def __init__(self, data: dict, source: str, family: str, prefix: str = ""):
        self.data, self.source, self.family, self.prefix = data, source, family, prefix

    def sub(self, key: str) -> Cfg:
        value = self.data.get(key)
        if not isinstance(value, dict):
            self._bad(key, value, "is missing" if value is None else "must be a JSON object")
        return Cfg(value, self.source, self.family, f"{self.prefix}{key}.")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _bad(self, key: str, value: Any, rule: str):
        shown = "" if value is None and rule == "is missing" else f"={value!r}"
        raise InputError(f"{self.source}: {self.prefix}{key}{shown}: {rule} "
                         f"({self.family} needs it)")

    def int(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        """An integer field; ``None`` in the file counts as missing."""
        value = self.data.get(key)
        if value is None:
            if default is None:
                self._bad(key, None, "is missing")
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self._bad(key, value, "must be an integer")
        if value < minimum:
            self._bad(key, value, f"must be >= {minimum}")
        cap = HF_INT_CAPS.get(key)
        if cap is not None and value > cap:
            self._bad(key, value, f"must be <= {cap}, moeopt's cap")
        return value

    def first_int(self, keys: tuple[str, ...], default: int | None = None, *, minimum: int = 1) -> int:
        """The first of ``keys`` present (aliases across families)."""
        for key in keys:
            if self.has(key):
                return self.int(key, minimum=minimum)
        if default is None:
            raise InputError(f"{self.source}: {self.prefix}{keys[0]} is missing (also looked for "
                             f"{', '.join(self.prefix + k for k in keys[1:])}; {self.family} needs it)")
        return default

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self._bad(key, value, "must be true or false")
        return value

    def str(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self._bad(key, value, "must be a string")
        return value

    def int_list(self, key: str) -> list[int] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            self._bad(key, value if not isinstance(value, list) else "[...]", "must be a list of integers")
        return value
