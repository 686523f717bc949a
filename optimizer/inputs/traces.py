"""Request traces: CSV (header ``arrival_s,prompt_tokens,output_tokens``) or JSONL (one
object with those keys per line), read into arrays with one-line errors naming the file,
the row, the field and the rule. Times are seconds from any origin, non-decreasing;
lengths are positive integers (the first output token counts, so output_tokens >= 1)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.errors import InputError
from optimizer.inputs.files import read_text

COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
MAX_TOKENS = 10**7


@dataclass(frozen=True)
class Trace:
    """Requests in arrival order: times (s, float64) and lengths (tokens, int64), shape (n,)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)


def read_trace(path: str | Path, what: str = "workload.trace") -> Trace:
    """The trace in ``path`` (``.jsonl``/``.json`` lines, anything else CSV)."""
    p = Path(path)
    text = read_text(p, what, "a CSV or JSONL trace")
    rows = _jsonl_rows(text, p, what) if p.suffix.lower() in (".jsonl", ".json") else _csv_rows(text, p, what)
    if not rows:
        raise InputError(f"{what} {p}: no rows: a trace needs at least one request")
    arrival = np.empty(len(rows))
    prompt = np.empty(len(rows), dtype=np.int64)
    output = np.empty(len(rows), dtype=np.int64)
    previous = -math.inf
    for i, (line, row) in enumerate(rows):
        where = f"{what} {p}: row {line}"
        arrival[i] = _time(row.get("arrival_s"), where)
        if arrival[i] < previous:
            raise InputError(f"{where}: arrival_s={row['arrival_s']} is before the previous "
                             f"row's {previous:g}: times must be non-decreasing")
        previous = arrival[i]
        prompt[i] = _tokens(row.get("prompt_tokens"), "prompt_tokens", where)
        output[i] = _tokens(row.get("output_tokens"), "output_tokens", where)
    return Trace(arrival, prompt, output)


def _csv_rows(text: str, p: Path, what: str) -> list[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text))
    lines = [(n + 1, r) for n, r in enumerate(reader) if any(c.strip() for c in r)]
    if not lines:
        return []
    header = [c.strip() for c in lines[0][1]]
    if sorted(header) != sorted(COLUMNS):
        raise InputError(f"{what} {p}: header={','.join(header)!r}: expected the columns "
                         f"{','.join(COLUMNS)}")
    out = []
    for n, cells in lines[1:]:
        if len(cells) != len(header):
            raise InputError(f"{what} {p}: row {n}: {len(cells)} cells, expected {len(header)}")
        out.append((n, {k: v.strip() for k, v in zip(header, cells)}))
    return out


def _jsonl_rows(text: str, p: Path, what: str) -> list[tuple[int, dict]]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{what} {p}: row {n}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or set(row) != set(COLUMNS):
            raise InputError(f"{what} {p}: row {n}: expected an object with exactly the keys "
                             f"{', '.join(COLUMNS)}")
        out.append((n, row))
    return out


def _time(value, where: str) -> float:
    try:
        t = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t) or t < 0:
        raise InputError(f"{where}: arrival_s={value!r}: must be a finite number of seconds >= 0")
    return t


def _tokens(value, name: str, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and value.lstrip("-").isdigit():
        n = int(value)
    else:
        raise InputError(f"{where}: {name}={value!r}: must be an integer")
    if not 1 <= n <= MAX_TOKENS:
        raise InputError(f"{where}: {name}={n}: must be between 1 and {MAX_TOKENS}")
    return n
