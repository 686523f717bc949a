"""Readers for measured expert loads: SGLang recorder JSON, CSV and NumPy ``.npy``.

Every reader returns ``(layer_ids, counts)``: ``counts`` is an ``int64`` array of shape
[num_layers][num_experts] holding routed token copies (each token counts once for every
expert it is routed to, so a layer sums to tokens x top_k), and ``layer_ids`` the layer
index of each row. Every problem is an :class:`InputError` (exit 2) naming the file and the
rule it breaks.

Formats
- ``.json``: SGLang's ``{"logical_count": [...]}`` (what ``--init-expert-location`` accepts
  and the expert-distribution recorder writes, converted from ``.pt``), or a bare array.
  Shape [layers][experts], or [steps][layers][experts] summed over steps. Integral floats
  (``3.0``) are accepted as integers.
- ``.csv``: rows ``layer,expert,tokens`` with an optional header line. Pairs that are
  missing count 0; a pair listed twice is summed (one row per step is fine). Layer ids are
  kept as given; experts are ``0 .. max id``.
- ``.npy``: an integer (or integral float) array of 2 or 3 dimensions, read with
  ``numpy.load(allow_pickle=False)``.

Layers whose counts are all zero are dropped by :func:`moe_layers` (SGLang files carry a
row for every hidden layer, dense layers included).

Caps (checked before anything large is allocated; each breach is a one-line InputError):
a count and a count summed over steps <= ``MAX_COUNT``; at most ``MAX_LAYERS`` layers,
``MAX_EXPERTS`` experts per layer and ``MAX_VALUES`` numbers in a file (steps x layers x
experts), so a file never needs more than ~256 MiB of int64. Counts are summed over steps in
chunks small enough that int64 cannot overflow before the cap is checked.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from optimizer.errors import InputError
from optimizer.inputs.files import read_json, read_text

MAX_COUNT = 10**15      # tokens of one expert in one layer (summed over steps)
MAX_LAYERS = 4096       # rows of a load file (real models have < 200 layers)
MAX_EXPERTS = 65_536    # experts per layer (real models have <= 1024)
MAX_VALUES = 1 << 25    # numbers in one file (steps x layers x experts): 256 MiB as int64
_MAX_ID_DIGITS = 12     # digits of a CSV layer or expert id (checked before int())
_MAX_LAYER_ID = 10**9
_STEP_CHUNK = 9000      # 9000 x MAX_COUNT + MAX_COUNT < 2**63: a chunk sum cannot overflow


def read_loads(path: str) -> tuple[list[int], np.ndarray]:
    """Layer ids and [layers][experts] int64 counts from a load file (format by suffix)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return _from_json(path)
    if suffix == ".csv":
        return _from_csv(path)
    if suffix == ".npy":
        return _from_npy(path)
    if suffix == ".pt":
        raise InputError(f"loads {path}: .pt files need PyTorch, which moeopt does not use; convert "
                         "with: python -c \"import torch,json,sys; d=torch.load(sys.argv[1]); "
                         "json.dump({'logical_count': d['logical_count'].tolist()}, open(sys.argv[2],'w'))\" "
                         "IN.pt OUT.json")
    raise InputError(f"loads {path}: unknown format {suffix or '(no suffix)'!r}; expected .json, .csv or .npy")


def moe_layers(layer_ids: list[int], counts: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Drop the all-zero rows (dense layers); at least one layer must remain."""
    keep = (counts > 0).any(axis=1)  # no sum: a row's total may exceed int64
    if not keep.any():
        raise InputError("loads: every layer's counts are all zero")
    return [lid for lid, k in zip(layer_ids, keep) if k], counts[keep]


def _from_json(path: str) -> tuple[list[int], np.ndarray]:
    data = read_json(path, "loads")
    if isinstance(data, dict):
        if "logical_count" not in data:
            keys = ", ".join(sorted(map(str, data))[:5]) or "none"
            raise InputError(f"loads {path}: no 'logical_count' key (keys: {keys})")
        data = data["logical_count"]
    if not isinstance(data, list):
        raise InputError(f"loads {path}: logical_count must be an array, got {type(data).__name__}")
    depth, probe = 0, data
    while isinstance(probe, list):
        depth += 1
        if not probe:
            raise InputError(f"loads {path}: logical_count has an empty array at depth {depth}")
        probe = probe[0]
    if depth not in (2, 3):
        raise InputError(f"loads {path}: logical_count has {depth} dimensions; expected "
                         "[layers][experts] or [steps][layers][experts]")
    rows = data if depth == 2 else data[0]
    width = len(rows[0])
    expected = (len(data), width) if depth == 2 else (len(data), len(rows), width)
    check_shape(expected, f"loads {path}: logical_count")
    arr = _fast_array(data, expected)
    if arr is None:  # ragged, or a bad element: walk the lists to name the first problem
        flat: list[int] = []
        _flatten(data, expected, (), flat, path, expected)
        arr = np.array(flat, dtype=np.int64).reshape(expected)
    return _finish(arr, path)


def _fast_array(data: list, shape: tuple[int, ...]) -> np.ndarray | None:
    """The nested list as an int64 array when it is rectangular, numeric, integral and
    free of booleans; otherwise None (the slow path then names the problem)."""
    try:
        arr = np.array(data)
    except (ValueError, OverflowError):
        return None
    if arr.shape != shape or arr.dtype.kind not in "if":
        return None
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.floor(arr)).all()
                                      and (np.abs(arr) <= MAX_COUNT).all()):
        return None
    items = (v for block in (data if len(shape) == 3 else [data]) for row in block for v in row)
    if any(type(v) is bool for v in items):
        return None
    return arr.astype(np.int64)


def _flatten(node, shape: tuple[int, ...], at: tuple[int, ...], out: list[int], path: str,
             full: tuple[int, ...]) -> None:
    """Append the integers of a nested list, checking it is rectangular of ``full`` shape."""
    where = "".join(f"[{i}]" for i in at)
    if len(shape) == 0:
        out.append(_count(node, f"logical_count{where}", path))
        return
    if not isinstance(node, list) or len(node) != shape[0]:
        got = f"length {len(node)}" if isinstance(node, list) else type(node).__name__
        raise InputError(f"loads {path}: logical_count{where} has {got}, expected length {shape[0]} "
                         f"(shape {'x'.join(map(str, full))} from the first row)")
    for i, child in enumerate(node):
        _flatten(child, shape[1:], at + (i,), out, path, full)


def _count(value, where: str, path: str) -> int:
    """One token count: a non-negative integer (an integral float is accepted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"loads {path}: {where}={value!r}: counts must be non-negative integers")
    if isinstance(value, float):
        if not value.is_integer():
            raise InputError(f"loads {path}: {where}={value!r}: counts must be integers")
        value = int(value)
    if value < 0:
        raise InputError(f"loads {path}: {where}={value}: counts must be >= 0")
    if value > MAX_COUNT:
        raise InputError(f"loads {path}: {where}={value}: counts must be <= {MAX_COUNT}")
    return value


def _from_csv(path: str) -> tuple[list[int], np.ndarray]:
    text = _read_text(path)
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and not _is_int(rows[0][0]):
        header = [c.strip().lower() for c in rows[0]]
        if header != ["layer", "expert", "tokens"]:
            raise InputError(f"loads {path}: header {','.join(rows[0])!r} must be 'layer,expert,tokens'")
        rows, first = rows[1:], 2
    else:
        first = 1
    if not rows:
        raise InputError(f"loads {path}: no data rows; expected 'layer,expert,tokens'")
    cells: dict[tuple[int, int], int] = {}
    for lineno, row in enumerate(rows, start=first):
        if len(row) != 3:
            raise InputError(f"loads {path}: line {lineno} has {len(row)} fields; expected layer,expert,tokens")
        layer, expert, tokens = (c.strip() for c in row)
        for name, cell, cap in (("layer", layer, _MAX_LAYER_ID), ("expert", expert, MAX_EXPERTS - 1)):
            if not _is_int(cell) or cell.startswith("-"):
                raise InputError(f"loads {path}: line {lineno}: {name}={cell!r}: must be an integer >= 0")
            if len(cell.lstrip("+")) > _MAX_ID_DIGITS or int(cell) > cap:
                raise InputError(f"loads {path}: line {lineno}: {name}={cell[:20]!r}: must be <= {cap}")
        if not _is_int(tokens) or len(tokens.lstrip("+-")) > 18:
            if _is_int(tokens) and not tokens.startswith("-"):
                raise InputError(f"loads {path}: line {lineno}: tokens={tokens[:20]!r}: counts must be <= {MAX_COUNT}")
            raise InputError(f"loads {path}: line {lineno}: tokens={tokens[:20]!r}: counts must be non-negative integers")
        value = _count(int(tokens), f"line {lineno} tokens", path)
        key = (int(layer), int(expert))
        cells[key] = cells.get(key, 0) + value
    layer_ids = sorted({lay for lay, _ in cells})
    num_experts = 1 + max(x for _, x in cells)
    check_shape((len(layer_ids), num_experts), f"loads {path}: layers x experts (1 + largest expert id)")
    arr = np.zeros((len(layer_ids), num_experts), dtype=np.int64)
    row_of = {lid: i for i, lid in enumerate(layer_ids)}
    for (lay, x), v in cells.items():
        if v > MAX_COUNT:  # Python ints: the check comes before int64 could overflow
            raise InputError(f"loads {path}: layer {lay} expert {x}: summed tokens {v} exceed {MAX_COUNT}")
        arr[row_of[lay], x] = v
    return layer_ids, arr


def _is_int(cell: str) -> bool:
    cell = cell.strip()
    return cell.lstrip("-+").isdigit()


def _read_text(path: str) -> str:
    return read_text(path, "loads", encoding="utf-8-sig")


def check_shape(shape: tuple[int, ...], what: str) -> None:
    """InputError unless ``shape`` ([steps][layers][experts] or [layers][experts]) is
    within ``MAX_LAYERS``, ``MAX_EXPERTS`` and ``MAX_VALUES``."""
    layers, experts = shape[-2], shape[-1]
    if layers > MAX_LAYERS:
        raise InputError(f"{what}: {layers} layers; at most {MAX_LAYERS}")
    if experts > MAX_EXPERTS:
        raise InputError(f"{what}: {experts} experts per layer; at most {MAX_EXPERTS}")
    values = math.prod(shape)
    if values > MAX_VALUES:
        raise InputError(f"{what}: shape {'x'.join(map(str, shape))} holds {values} numbers; at most {MAX_VALUES}")


def _npy_header(p: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, read without loading the data; the shape is
    checked against the caps and the file size against the shape."""
    with open(p, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        offset = fh.tell()
    if len(shape) not in (2, 3):
        raise InputError(f"loads {p}: array has shape {shape}; expected [layers][experts] "
                         "or [steps][layers][experts]")
    check_shape(shape, f"loads {p}")
    if dtype.kind in "iuf" and p.stat().st_size < offset + math.prod(shape) * dtype.itemsize:
        raise InputError(f"loads {p}: file is shorter than its header's shape {shape} of {dtype} needs")
    return shape, dtype


def _from_npy(path: str) -> tuple[list[int], np.ndarray]:
    p = Path(path)
    try:
        _npy_header(p)
        arr = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"loads {p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"loads {p}: is a directory, expected a file") from None
    except PermissionError:
        raise InputError(f"loads {p}: cannot be read (permission denied)") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"loads {p}: not a readable .npy array ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"loads {p}: expected one array, got {type(arr).__name__}")
    if arr.ndim not in (2, 3):
        raise InputError(f"loads {p}: array has shape {arr.shape}; expected [layers][experts] "
                         "or [steps][layers][experts]")
    if arr.size == 0:
        raise InputError(f"loads {p}: array of shape {arr.shape} is empty")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InputError(f"loads {p}: array holds NaN or infinity; counts must be integers")
        frac = arr != np.floor(arr)
        if frac.any():
            idx = tuple(int(i) for i in np.argwhere(frac)[0])
            raise InputError(f"loads {p}: element {list(idx)}={arr[idx]!r}: counts must be integers")
        if (np.abs(arr) > MAX_COUNT).any():
            raise InputError(f"loads {p}: a count exceeds {MAX_COUNT}")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.max() > MAX_COUNT:
            raise InputError(f"loads {p}: a count exceeds {MAX_COUNT}")
        arr = arr.astype(np.int64)
    else:
        raise InputError(f"loads {p}: dtype {arr.dtype} is not numeric; counts must be integers")
    return _finish(arr, str(p))


def _finish(arr: np.ndarray, path: str) -> tuple[list[int], np.ndarray]:
    """Check signs and size, sum over steps: [layers][experts] int64."""
    if (arr < 0).any():
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise InputError(f"loads {path}: element {list(idx)}={int(arr[idx])}: counts must be >= 0")
    if (arr > MAX_COUNT).any():
        raise InputError(f"loads {path}: a count exceeds {MAX_COUNT}")
    if arr.ndim == 3:
        total = np.zeros(arr.shape[1:], dtype=np.int64)
        for first in range(0, arr.shape[0], _STEP_CHUNK):  # each partial sum stays <= MAX_COUNT
            total += arr[first:first + _STEP_CHUNK].sum(axis=0)
            if (total > MAX_COUNT).any():
                idx = tuple(int(i) for i in np.argwhere(total > MAX_COUNT)[0])
                raise InputError(f"loads {path}: layer {idx[0]} expert {idx[1]}: count summed over "
                                 f"steps exceeds {MAX_COUNT}")
        arr = total
    return list(range(arr.shape[0])), np.ascontiguousarray(arr, dtype=np.int64)
