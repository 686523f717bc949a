"""The names and labels moeopt reads from files, validated once at the boundary.

Every string that reaches a path, a shell script, a YAML file or a terminal is one of these:
- ``ResultName``: names a folder under ``results/`` (an instance's name, the ``instance`` of a
  plan): letters, digits, ``_``, ``.``, ``-``; starts with a letter or digit; at most 128
  characters. So it has no path separator, cannot be ``..`` and needs no quoting.
- ``Label``: free text shown to people (a model's or a GPU's name): printable characters only
  (no control characters, so no newline and no terminal escape; no lone surrogate), at most
  200 characters.

Both are plain pydantic annotated types: use them as field types in any schema (the instance
schema here, the plan reader in ``optimizer.plan.files``) so that every command validates
names the same way. Limits are collected in ``docs/input-limits.md``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["ResultName", "Label", "check_result_name", "check_label", "RESULT_NAME", "MAX_LABEL_CHARS"]

RESULT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_LABEL_CHARS = 200


def check_result_name(value: str) -> str:
    """``value`` if it is a safe folder name under ``results/``; else ValueError."""
    if not RESULT_NAME.fullmatch(value):
        raise ValueError(f"{value[:60]!r} must be 1-128 letters, digits, '_', '.', '-' "
                         "starting with a letter or digit")
    return value


def check_label(value: str) -> str:
    """``value`` if it is printable text of at most MAX_LABEL_CHARS characters; else ValueError."""
    if len(value) > MAX_LABEL_CHARS:
        raise ValueError(f"has {len(value)} characters; at most {MAX_LABEL_CHARS}")
    bad = next((ch for ch in value if unicodedata.category(ch)[0] == "C"), None)
    if bad is not None:
        raise ValueError(f"contains the control character {bad!r}")
    return value


ResultName = Annotated[str, AfterValidator(check_result_name)]
Label = Annotated[str, AfterValidator(check_label)]
