"""Fuzz inputs for every moeopt command, and the rule every run must obey.

Shared by ``tests/cli/test_fuzz.py`` (hypothesis, a bounded number of examples for CI) and
``benchmarks/bench_fuzz.py`` (a larger campaign). A generator takes a ``random.Random``
(hypothesis hands one in through ``st.randoms()``, the benchmark a seeded one) and a fresh
folder, writes the input files there and returns the command line to run.

Inputs start from valid files: the instances in ``instances/*.json``, plans written by
``moeopt solve`` (and the hand-written ``instances/seed_plan.json``), load files in SGLang
JSON, CSV and ``.npy`` form, and the HuggingFace configs under ``tests/fixtures/hf``.
Mutations set a field to a hostile value (wrong type, negative, zero, NaN, infinity,
enormous), scale a number, delete a field or a section, add an unknown key, or damage the
file itself (empty, binary, truncated, not UTF-8, a directory, missing, unreadable).

The rule (``docs/interface.md``): exit 0, 2, 3 or 4, never 1 (a bug) and never a
traceback; exit 2 prints exactly one line on stderr that names the field, file or option
and the rule it breaks.

Every solve gets ``--time-limit`` so that a valid mutant ends quickly; the command runs in
this process (click's CliRunner) for speed, with stdout and stderr apart.
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTANCE_DIR = REPO / "instances"
HF_DIR = REPO / "tests" / "fixtures" / "hf"
INSTANCE_FILES = sorted(p for p in INSTANCE_DIR.glob("*.json") if p.name != "seed_plan.json")
SEED_PLAN = INSTANCE_DIR / "seed_plan.json"
# Instances whose solve takes well under a second: the command-line fuzz solves them whole.
FAST_INSTANCE = INSTANCE_DIR / "10b_moe.json"
ALLOWED_EXIT = (0, 2, 3, 4)

# ------------------------------------------------------------------ hostile values

HOSTILE: list = [
    None, True, False, 0, -1, 1, 2, 3, 7, 1023, 2**31, 2**53 + 1, 2**63, -(2**63), 10**30, 10**400,
    0.0, -0.0, 0.5, -0.5, 1e-300, 1e-6, 1e9, 1e15, 1e300, math.nan, math.inf, -math.inf,
    "", "x", "4096", "1e3", "nan", "\u0000", "h\u00e9", "../../etc/passwd",
    [], [0], [-1], [[1, 2]], [None], {}, {"x": 1}, {"kind": "zipf"},
]


def hostile(rng: random.Random):
    """A value that is wrong in some way for most fields (type, sign, size, finiteness)."""
    pick = rng.random()
    if pick < 0.7:
        return copy.deepcopy(rng.choice(HOSTILE))
    if pick < 0.8:
        return rng.randint(-(10**20), 10**20)
    if pick < 0.9:
        return rng.choice([-1, 1]) * 10.0 ** rng.uniform(-300, 300)
    return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 6)))


# Values at or near the schema's limits, by field name: valid edges, not garbage, so that
# the mutant reaches the solver (its integer scaling, bounds and CP-SAT model).
EDGE_BY_NAME = [
    ("num_gpus", [1, 2, 3, 5, 8, 64, 1024, 4096, 65536]),
    ("gpus_per_node", [1, 2, 3, 8, 16, 1024]),
    ("num_layers", [1, 2, 3, 61, 128, 1000]),
    ("num_experts", [1, 2, 3, 64, 256, 1024]),
    ("top_k", [1, 2, 8]),
    ("batch_sequences", [1, 2, 3, 1000, 10**7]),
    ("prompt_tokens", [1, 2, 10**6, 10**7]),
    ("output_tokens", [0, 1, 10**6, 10**7]),
    ("max_micro_batches", [1, 4096]),
    ("efficiency", [1e-9, 1e-3, 1.0]),
    ("latency_us", [0, 1e-6, 1e9]),
    ("_gb", [1e-6, 1e-3, 1.0, 1e6, 1e9]),
    ("tflops", [1e-6, 1e-3, 1.0, 1e6, 1e9]),
    ("_gb_s", [1e-6, 1e-3, 1.0, 1e6, 1e9]),
    ("_s", [1e-6, 1e-3, 1.0, 1e6, 1e9]),
    ("_ms", [1e-6, 1e-3, 1.0, 1e6, 1e9]),
    ("tokens_per_ms", [0, 1e-6, 1.0, 1e6, 1e9]),
    ("size", [1, 2, 3, 64, 10**6, 10**9]),
    ("heads", [1, 2, 128, 10**4]),
    ("head_dim", [1, 2, 10**5]),
    ("exponent", [0, 8]),
    ("factor", [1, 64]),
]


def edge(rng: random.Random, key, value):
    """A valid-looking edge value for the field ``key`` (else ``scaled``)."""
    if isinstance(key, str) and not isinstance(value, bool) and isinstance(value, (int, float)):
        for suffix, values in EDGE_BY_NAME:
            if suffix in key:
                return rng.choice(values)
    return scaled(rng, value)


def scaled(rng: random.Random, value):
    """A number pushed towards an edge: zero, negated, tiny, enormous, or one off."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return hostile(rng)
    how = rng.choice(["zero", "neg", "tiny", "huge", "plus", "minus", "half", "double", "max"])
    if how == "zero":
        return 0 if isinstance(value, int) else 0.0
    if how == "neg":
        return -value if value else -1
    if how == "tiny":
        return value * 1e-9
    if how == "huge":
        return value * 10 ** rng.choice([3, 6, 9, 12, 18])
    if how in ("plus", "minus"):
        return value + (1 if how == "plus" else -1)
    if how == "half":
        return value // 2 if isinstance(value, int) else value / 2
    if how == "double":
        return value * 2
    return rng.choice([10**9, 10**9 + 1, 65536, 65537, 10**7, 10**7 + 1, 4096, 2**31])


# ------------------------------------------------------------------ JSON mutation


def paths(node, prefix=()) -> list[tuple]:
    """Every key path in a JSON document (lists: first, second and last items only)."""
    out = []
    if isinstance(node, dict):
        for key, child in node.items():
            out.append(prefix + (key,))
            out += paths(child, prefix + (key,))
    elif isinstance(node, list) and node:
        for i in sorted({0, min(1, len(node) - 1), len(node) - 1}):
            out.append(prefix + (i,))
            out += paths(node[i], prefix + (i,))
    return out


def _parent(doc, path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    return node


def mutate_doc(rng: random.Random, doc, max_ops: int = 3, edges_only: bool = False) -> tuple[object, list[str]]:
    """A copy of ``doc`` with 1..max_ops mutations; returns it and a description of each.
    ``edges_only``: only valid-looking edge values for numeric fields (most such mutants
    pass validation and reach the solver)."""
    doc = copy.deepcopy(doc)
    notes = []
    for _ in range(rng.randint(1, max_ops)):
        all_paths = paths(doc)
        if edges_only:
            numeric = [p for p in all_paths if isinstance(_parent(doc, p)[p[-1]], (int, float))
                       and not isinstance(_parent(doc, p)[p[-1]], bool)]
            all_paths = numeric or all_paths
        op = "edge" if edges_only else rng.choice(["set", "set", "scale", "scale", "edge", "edge", "delete",
                                                   "unknown", "section", "retype"])
        if not all_paths or op == "section":
            if isinstance(doc, dict) and doc and rng.random() < 0.5:
                key = rng.choice(sorted(doc))
                doc[key] = hostile(rng) if rng.random() < 0.7 else {}
                notes.append(f"section {key}={doc[key]!r:.40}")
            else:
                doc = hostile(rng) if rng.random() < 0.5 else rng.choice([[], {}, [doc]])
                notes.append(f"top level -> {type(doc).__name__}")
            continue
        path = rng.choice(all_paths)
        parent, key = _parent(doc, path), path[-1]
        where = ".".join(map(str, path))
        if op == "set":
            parent[key] = hostile(rng)
            notes.append(f"{where}={parent[key]!r:.40}")
        elif op == "edge":
            parent[key] = edge(rng, key, parent[key])
            notes.append(f"{where}:={parent[key]!r:.40}")
        elif op == "scale":
            parent[key] = scaled(rng, parent[key])
            notes.append(f"{where}~{parent[key]!r:.40}")
        elif op == "delete":
            del parent[key]
            notes.append(f"del {where}")
        elif op == "unknown":
            target = parent[key] if isinstance(parent[key], dict) else parent
            if isinstance(target, dict):
                name = rng.choice(["zz_unknown", "memory_gib", "num_gpu", "preset", "kind", "Name"])
                target[name] = hostile(rng)
                notes.append(f"unknown {where}.{name}")
            else:
                parent[key] = {"zz_unknown": 1}
                notes.append(f"{where}={{unknown}}")
        else:  # retype: the same value in another JSON type
            value = parent[key]
            parent[key] = (str(value) if not isinstance(value, str) else [value]) if rng.random() < 0.5 else (
                [value] if not isinstance(value, list) else {"0": value})
            notes.append(f"retype {where}")
    return doc, notes


def encode(rng: random.Random, doc, p_damage: float = 0.15) -> tuple[bytes, str]:
    """The document as file bytes: JSON (NaN/Infinity literals where the document has
    them), sometimes damaged (truncated, not UTF-8, NUL bytes, a BOM, a 1e999 literal)."""
    text = json.dumps(doc, indent=rng.choice([None, 1, 2]), allow_nan=True, ensure_ascii=rng.random() < 0.5)
    data = text.encode("utf-8")
    if rng.random() >= p_damage:
        return data, "json"
    how = rng.choice(["truncate", "latin1", "nul", "bom", "literal", "garbage", "empty", "trailing"])
    if how == "truncate":
        return data[: rng.randint(0, max(0, len(data) - 1))], how
    if how == "latin1":
        return text.encode("latin-1", errors="replace") + b"\xff\xfe\xe9", how
    if how == "nul":
        cut = rng.randint(0, len(data))
        return data[:cut] + b"\x00" + data[cut:], how
    if how == "bom":
        return b"\xef\xbb\xbf" + data, how
    if how == "literal":
        out, n = re.subn(rb"(?<=: )\d+(\.\d+)?", rng.choice([b"1e999", b"-1e999", b"123456789012345678901234567890",
                                                             b"NaN", b"Infinity", b"0x10", b"1_0"]), data, count=1)
        return out, how
    if how == "garbage":
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 64))), how
    if how == "trailing":
        return data + b",}", how
    return b"", how


# Damage to the path itself rather than to the content.
PATH_DAMAGE = ("directory", "missing", "unreadable")


def place_file(rng: random.Random, folder: Path, name: str, data: bytes, p_path_damage: float = 0.05) -> tuple[Path, str]:
    """Write ``data`` to folder/name, or (rarely) put a directory or nothing there, or
    make the file unreadable (chmod 000; as root it stays readable)."""
    path = folder / name
    how = rng.choice(PATH_DAMAGE) if rng.random() < p_path_damage else "file"
    if how == "directory":
        path.mkdir()
    elif how != "missing":
        path.write_bytes(data)
        if how == "unreadable":
            path.chmod(0)
    return path, how


# ------------------------------------------------------------------ cases


@dataclass
class Case:
    command: str  # the command name, for the tallies
    args: list[str]
    notes: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)  # names an exit-2 line may use (paths)
    # paths that must not exist afterwards ("PATH!TEXT": a file that must still hold TEXT)
    forbidden: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    exception: BaseException | None = None


_BASES: dict[str, dict] = {}


def bases() -> dict[str, dict]:
    """The valid instance documents, by file name."""
    if not _BASES:
        for p in INSTANCE_FILES:
            _BASES[p.name] = json.loads(p.read_text())
    return _BASES


def hf_bases() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(HF_DIR.glob("*.json"))}


def instance_case(rng: random.Random, folder: Path, command: str = "solve",
                  time_limit: float = 1.0, gpus_cap: int | None = 16) -> Case:
    """A mutated instance given to solve / check / inspect / pareto / report --instance."""
    name = rng.choice(sorted(bases()))
    edges_only = rng.random() < 0.5
    doc, notes = mutate_doc(rng, bases()[name], edges_only=edges_only)
    data, how = encode(rng, doc, p_damage=0.0 if edges_only else 0.15)
    path, where = place_file(rng, folder, "instance.json", data, p_path_damage=0.0 if edges_only else 0.05)
    notes = ([f"base {name}" + (" (edges)" if edges_only else "")] + notes
             + ([how] if how != "json" else []) + ([where] if where != "file" else []))
    if command == "solve":
        args = ["solve", str(path), "--time-limit", str(time_limit), "--output", str(folder / "plan.json")]
        if gpus_cap and rng.random() < 0.5:
            args += ["--gpus", str(rng.choice([1, 2, 4, 8, gpus_cap]))]
        args += rng.choice([[], ["--format", "json"]])
    elif command == "inspect":
        args = ["inspect", str(path)] + rng.choice([[], ["--format", "json"]])
    elif command == "check":
        plan = rng.choice([SEED_PLAN, None])
        args = ["check", str(path), str(plan or _plan_for(folder, name))] + rng.choice([[], ["--format", "json"]])
    else:
        raise ValueError(command)
    return Case(command, args, notes, [str(path)])


_PLANS: dict[str, dict] = {}


def solved_plan(name: str = "10b_moe.json") -> dict:
    """A valid plan of instances/<name>, written by ``moeopt solve`` (cached)."""
    if name not in _PLANS:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "plan.json"
            res = invoke(["solve", str(INSTANCE_DIR / name), "--output", str(out), "--time-limit", "20"], Path(tmp))
            if res.code != 0:
                raise RuntimeError(f"cannot solve {name}: {res.stderr}")
            _PLANS[name] = json.loads(out.read_text())
    return _PLANS[name]


def _plan_for(folder: Path, name: str) -> Path:
    """A valid plan file for instance ``name`` when it solves quickly, else the seed plan."""
    if name != "10b_moe.json":
        return SEED_PLAN
    path = folder / "valid_plan.json"
    path.write_text(json.dumps(solved_plan(name)))
    return path


def plan_case(rng: random.Random, folder: Path, command: str = "check") -> Case:
    """A mutated plan given to check / export / report."""
    base = solved_plan() if rng.random() < 0.75 else json.loads(SEED_PLAN.read_text())
    doc, notes = mutate_doc(rng, base)
    data, how = encode(rng, doc)
    path, where = place_file(rng, folder, "plan.json", data)
    notes += ([how] if how != "json" else []) + ([where] if where != "file" else [])
    inst = str(FAST_INSTANCE)
    if command == "check":
        args = ["check", inst, str(path)] + rng.choice([[], ["--format", "json"]])
    elif command == "export":
        fmt = rng.choice(["sglang", "vllm", "trtllm", "megatron", "csv"])
        args = ["export", str(path), "--to", fmt, "--output", str(folder / "export")]
        args += rng.choice([[], ["--instance", inst], ["--format", "json"]])
    elif command == "report":
        args = ["report", str(path), "--output", str(folder / "report.html")] + rng.choice([[], ["--instance", inst]])
    else:
        raise ValueError(command)
    return Case(command, args, notes, [str(path)])


def base_counts(rng: random.Random) -> list[list[int]]:
    layers, experts = rng.choice([1, 2, 4]), rng.choice([4, 8, 16])
    return [[rng.randint(0, 5000) for _ in range(experts)] for _ in range(layers)]


def loads_case(rng: random.Random, folder: Path, time_limit: float = 0.5) -> Case:
    """A mutated load file (SGLang JSON, CSV or .npy) given to ``place --loads``."""
    counts = base_counts(rng)
    fmt = rng.choice(["json", "json", "csv", "npy"])
    notes = [fmt]
    if fmt == "json":
        doc = {"logical_count": counts if rng.random() < 0.7 else [counts, counts]}
        if rng.random() < 0.85:
            doc, more = mutate_doc(rng, doc)
            notes += more
        data, how = encode(rng, doc)
        notes += [how] if how != "json" else []
    elif fmt == "csv":
        data = _csv_loads(rng, counts, notes)
    else:
        data = _npy_loads(rng, counts, notes)
    path, where = place_file(rng, folder, f"loads.{fmt}", data)
    notes += [where] if where != "file" else []
    experts = len(counts[0])
    args = ["place", "--loads", str(path), "--ep", str(rng.choice([1, 2, 4, experts, 3, 0, 1000]))]
    if rng.random() < 0.3:
        args += ["--redundant", str(rng.choice([0, 1, 2, 4, 8, -1]))]
    if rng.random() < 0.3:
        args += ["--nodes", str(rng.choice([1, 2, 4, 3, 0]))]
    if rng.random() < 0.2:
        args += ["--spread-replicas"]
    if rng.random() < 0.2:
        args = ["place", str(FAST_INSTANCE)] + args[1:]
    args += ["--time-limit", str(time_limit)] + rng.choice([[], ["--format", "json"]])
    return Case("place", args, notes, [str(path)])


def _csv_loads(rng: random.Random, counts, notes: list[str]) -> bytes:
    rows = [["layer", "expert", "tokens"]] if rng.random() < 0.5 else []
    rows += [[str(l), str(x), str(v)] for l, row in enumerate(counts) for x, v in enumerate(row)]
    for _ in range(rng.randint(0, 3)):
        if len(rows) < 1:
            break
        i = rng.randrange(len(rows))
        how = rng.choice(["cell", "short", "long", "header", "blank"])
        if how == "cell" and rows[i]:
            rows[i][rng.randrange(len(rows[i]))] = str(hostile(rng))
        elif how == "short":
            rows[i] = rows[i][:rng.randint(0, 2)]
        elif how == "long":
            rows[i] = rows[i] + ["7"]
        elif how == "header":
            rows.insert(0, ["layer", "expert", rng.choice(["count", "tokens", ""])])
        else:
            rows[i] = [""]
        notes.append(f"csv {how} row {i}")
    text = "\n".join(",".join(r) for r in rows) + "\n"
    data = text.encode("utf-8", errors="surrogatepass")
    if rng.random() < 0.1:
        data, how = rng.choice([(b"", "empty"), (b"\xff\xfe\x00garbage", "binary"), (data[: len(data) // 2], "truncate")])
        notes.append(how)
    return data


def _npy_loads(rng: random.Random, counts, notes: list[str]) -> bytes:
    import numpy as np

    arr = np.array(counts, dtype=np.int64)
    how = rng.choice(["ok", "float", "nan", "neg", "huge", "uint", "bool", "str", "object", "complex",
                      "1d", "4d", "empty", "frac", "3d", "truncate", "garbage"])
    notes.append(f"npy {how}")
    buf = io.BytesIO()
    if how == "float":
        arr = arr.astype(np.float64)
    elif how == "nan":
        arr = arr.astype(np.float64)
        arr.flat[0] = rng.choice([np.nan, np.inf, -np.inf])
    elif how == "neg":
        arr.flat[0] = -rng.randint(1, 10**18)
    elif how == "huge":
        arr.flat[0] = rng.choice([10**15 + 1, 2**62, 2**63 - 1])
    elif how == "uint":
        arr = arr.astype(np.uint64)
        arr.flat[0] = np.uint64(2**64 - 1)
    elif how == "bool":
        arr = arr > 100
    elif how == "str":
        arr = arr.astype(str)
    elif how == "object":
        arr = arr.astype(object)
    elif how == "complex":
        arr = arr.astype(np.complex128)
    elif how == "1d":
        arr = arr.ravel()
    elif how == "4d":
        arr = arr.reshape((1, 1) + arr.shape)
    elif how == "empty":
        arr = np.zeros((0, 4), dtype=np.int64)
    elif how == "frac":
        arr = arr.astype(np.float64) + 0.5
    elif how == "3d":
        arr = np.stack([arr, arr])
    np.save(buf, arr, allow_pickle=(how == "object"))
    data = buf.getvalue()
    if how == "truncate":
        data = data[: rng.randint(0, len(data) - 1)]
    elif how == "garbage":
        data = b"\x93NUMPY" + bytes(rng.randint(0, 255) for _ in range(40))
    return data


def hf_case(rng: random.Random, folder: Path) -> Case:
    """A mutated HuggingFace config.json given to import-hf, inspect or init."""
    hf = hf_bases()
    name = rng.choice(sorted(hf))
    doc, notes = mutate_doc(rng, hf[name])
    data, how = encode(rng, doc)
    path, where = place_file(rng, folder, "config.json", data)
    notes = [f"hf {name}"] + notes + ([how] if how != "json" else []) + ([where] if where != "file" else [])
    command = rng.choice(["import-hf", "inspect", "init"])
    if command == "import-hf":
        args = ["import-hf", str(path)] + rng.choice([[], ["--weight-dtype", "fp8"], ["--kv-dtype", "fp8"]])
    elif command == "inspect":
        args = ["inspect", str(path)] + rng.choice([[], ["--format", "json"]])
    else:
        args = ["init", "--model", str(path), "--gpu", rng.choice(["h100-sxm", "a100-80gb", "b200"]),
                "--gpus", str(rng.choice([1, 8, 64])), "--output", str(folder / "new.json")]
    return Case(command, args, notes, [str(path)])


# Command-line options: values that are valid, invalid and on the edge, per option.
OPTION_VALUES = {
    "--gpus": ["1", "8", "64", "0", "-1", "65536", "65537", "3", "abc", "", "1e3", "8,16"],
    "--time-limit": ["1", "0.05", "0.049", "0", "-1", "nan", "inf", "-inf", "1e999", "86401", "abc", "", "0x10"],
    "--workers": ["1", "2", "0", "-1", "65", "x"],
    "--seed": ["0", "1", "-1", "2147483648", "99999999999999999999", "x"],
    "--format": ["table", "json", "csv", "xml", ""],
    "--output": ["-", "{dir}/out.json", "{dir}", "{dir}/a_file/x.json", "", "/proc/nope/x.json"],
    "--to": ["sglang", "vllm", "trtllm", "megatron", "csv", "onnx", ""],
    "--ep": ["1", "2", "4", "8", "16", "0", "3", "-2", "100000", "z"],
    "--redundant": ["0", "1", "4", "16", "-1", "1000001", "q"],
    "--nodes": ["1", "2", "4", "0", "3", "x"],
    "--jobs": ["1", "2", "0", "257"],
    "--prompt-tokens": ["1", "4096", "0", "10000001", "x"],
    "--batch": ["1", "32", "0", "10000001"],
    "--output-tokens": ["0", "1", "-1", "10000001"],
    "--max-ttft-s": ["1", "0", "-1", "nan", "inf", "1e308", "x"],
    "--max-tpot-ms": ["50", "0", "nan", "-inf"],
    "--min-throughput-tokens-per-ms": ["100", "0", "-5", "nan", "1e300"],
    "--max-memory-gb": ["80", "0", "-1", "nan", "1e300"],
    "--throughput-scope": ["deployment", "per_gpu", "all"],
    "--gpu": ["h100-sxm", "a100-80gb", "mi300x", "tpu", ""],
    "--weight-dtype": ["bf16", "fp8", "mxfp4", "int4"],
    "--kv-dtype": ["fp16", "fp8", "int2"],
    "--name": ["ok_name", "../evil", "", "a" * 200, "sp ace"],
    "--instance": ["{instance}", "{dir}", "{dir}/missing.json"],
    "--loads": ["{loads}", "{dir}", "{dir}/missing.json", "{dir}/loads.pt", "{dir}/loads.txt"],
    "--resume": [None],
    "--all": [None],
    "--spread-replicas": [None],
    "--report": [None],
    "--backend": ["local", "ray", "dask"],
    "--address": ["auto", ""],
    "-v": [None],
}

COMMAND_OPTIONS = {
    "solve": ["--gpus", "--time-limit", "--workers", "--seed", "--format", "--output", "--report", "-v"],
    "check": ["--format", "-v"],
    "pareto": ["--gpus", "--time-limit", "--workers", "--seed", "--format", "--output", "--all"],
    "sweep": ["--time-limit", "--workers", "--seed", "--format", "--output", "--jobs", "--resume", "--backend",
              "--address"],
    "place": ["--loads", "--ep", "--redundant", "--nodes", "--spread-replicas", "--format", "--output",
              "--time-limit", "--workers", "--seed"],
    "export": ["--to", "--output", "--instance", "--format"],
    "report": ["--instance", "--output"],
    "inspect": ["--format", "--prompt-tokens"],
    "init": ["--model", "--gpu", "--gpus", "--output", "--name", "--weight-dtype", "--kv-dtype", "--batch",
             "--prompt-tokens", "--output-tokens", "--max-ttft-s", "--max-tpot-ms",
             "--min-throughput-tokens-per-ms", "--throughput-scope", "--max-memory-gb"],
    "import-hf": ["--output", "--name", "--weight-dtype", "--kv-dtype"],
    "schema": [],
}
POSITIONAL = {
    "solve": ["{instance}"], "check": ["{instance}", "{plan}"], "pareto": ["{instance}"],
    "sweep": ["{instance}"], "place": [], "export": ["{plan}"], "report": ["{plan}"],
    "inspect": ["{instance}"], "init": [], "import-hf": ["{hf}"], "schema": [],
}
POSITIONAL_ODD = ["{dir}", "{dir}/missing.json", "", "-", "{plan}", "{instance}", "{loads}", "--", "-x"]


def cli_case(rng: random.Random, folder: Path) -> Case:
    """A command line with valid files and a random mix of options (valid, invalid, edge),
    unknown options, missing and extra arguments."""
    command = rng.choice(sorted(COMMAND_OPTIONS))
    (folder / "a_file").write_text("a file, not a folder")
    plan = folder / "valid_plan.json"
    plan.write_text(json.dumps(solved_plan()))
    loads = folder / "loads.json"
    loads.write_text(json.dumps({"logical_count": base_counts(rng)}))
    (folder / "loads.pt").write_bytes(b"\x80\x02")
    (folder / "loads.txt").write_text("1,2,3\n")
    fill = {"{dir}": str(folder), "{instance}": str(FAST_INSTANCE), "{plan}": str(plan),
            "{loads}": str(loads), "{hf}": str(rng.choice(sorted(HF_DIR.glob("*.json"))))}

    def sub(text: str) -> str:
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    args = [command] + [sub(a) for a in POSITIONAL[command]]
    if command == "schema":
        args += rng.choice([[], ["instance"], ["plan"], ["model"], ["instance", "plan"]])
    if rng.random() < 0.15 and len(args) > 1:
        args.pop(rng.randrange(1, len(args)))  # a missing argument
    if rng.random() < 0.15:
        args.insert(rng.randint(1, len(args)), sub(rng.choice(POSITIONAL_ODD)))  # an odd or extra one
    options = COMMAND_OPTIONS[command]
    chosen = rng.sample(options, rng.randint(0, min(4, len(options))))
    if command == "sweep":
        chosen.append("--gpus-list")
    if command == "init":
        chosen += [o for o in ("--model", "--gpu", "--gpus", "--output") if o not in chosen and rng.random() < 0.85]
    for opt in chosen:
        if opt == "--gpus-list":
            args += ["--gpus", rng.choice(["1,2", "8", "1,,2", "0,8", "a,b", "", "8,65537", "2,2,2"])]
            continue
        if opt == "--model":
            args += ["--model", sub(rng.choice(["{hf}", "{instance}", "{plan}", "{dir}", "{loads}"]))]
            continue
        value = rng.choice(OPTION_VALUES[opt])
        args += [opt] if value is None else [opt, sub(value)]
    if command in ("solve", "pareto", "sweep", "place") and "--time-limit" not in args:
        args += ["--time-limit", "1"]  # every solve ends quickly
    if rng.random() < 0.05:
        args.append(rng.choice(["--no-such-option", "--time-limit", "-z", "--format=", "--gpus=8"]))
    return Case(command, args, [" ".join(args)], [str(folder)])


GENERATORS = {
    "solve": lambda rng, folder: instance_case(rng, folder, "solve"),
    "inspect": lambda rng, folder: instance_case(rng, folder, "inspect"),
    "check-instance": lambda rng, folder: instance_case(rng, folder, "check"),
    "check-plan": lambda rng, folder: plan_case(rng, folder, "check"),
    "export": lambda rng, folder: plan_case(rng, folder, "export"),
    "report": lambda rng, folder: plan_case(rng, folder, "report"),
    "place": loads_case,
    "hf": hf_case,
    "cli": cli_case,
    "hostile": lambda rng, folder: _hostile().hostile_case(rng, folder),
}


def _hostile():
    from tests.oracles import hostile  # imports this module: loaded on first use
    return hostile


# ------------------------------------------------------------------ running and judging


def _runner():
    from click.testing import CliRunner
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def invoke(args: list[str], cwd: Path) -> Outcome:
    """Run ``moeopt ARGS`` in this process with ``cwd`` as the working folder."""
    from optimizer.cli import main

    root = logging.getLogger()
    for handler in list(root.handlers):  # cli_common.run's basicConfig binds the stderr of
        root.removeHandler(handler)      # its first run; each run must log to its own
    here = os.getcwd()
    os.chdir(cwd)
    start = time.perf_counter()
    try:
        res = _runner().invoke(main, args, catch_exceptions=True)
    finally:
        os.chdir(here)
        for handler in list(root.handlers):
            root.removeHandler(handler)
    seconds = time.perf_counter() - start
    exc = res.exception if res.exception and not isinstance(res.exception, SystemExit) else None
    return Outcome(res.exit_code, res.stdout, res.stderr, seconds, exc)


_NAMES: set[str] = set()


def known_names() -> set[str]:
    """Field names of the instance and plan schemas, option and argument names: one of
    them (or the input's path) must appear in an exit-2 line."""
    if not _NAMES:
        from optimizer.inputs.schema import Instance
        from optimizer.plan.files import PlanFile

        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "properties" and isinstance(value, dict):
                        _NAMES.update(value)
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(Instance.model_json_schema())
        walk(PlanFile.model_json_schema())
        _NAMES.update({"--", "INSTANCE", "PLAN", "PATH", "CONFIG_JSON", "WHAT", "instance", "plan", "loads",
                       "config", "logical_count", "layer", "expert", "tokens", "model", "name"})
    return _NAMES


def violations(case: Case, out: Outcome) -> list[str]:
    """How a run breaks the rule (empty when it obeys it)."""
    problems = []
    if out.code not in ALLOWED_EXIT:
        problems.append(f"exit code {out.code}")
    if "Traceback" in out.stdout or "Traceback" in out.stderr:
        problems.append("a traceback was printed")
    if out.exception is not None:
        problems.append(f"exception escaped: {type(out.exception).__name__}: {out.exception}")
    raw = sorted({ch for ch in out.stdout + out.stderr if ch not in "\n\t\r" and (ord(ch) < 32 or ord(ch) == 127)})
    if raw:
        problems.append(f"raw control characters printed: {raw!r}")
    problems += _hostile().broken_promises(case)
    if out.code == 2:
        lines = out.stderr.splitlines()
        if any(a in ("-v", "-vv", "--verbose") for a in case.args):  # logs asked for: not the error
            lines = [line for line in lines if not re.match(r"(DEBUG|INFO|WARNING):", line)]
        if len(lines) != 1:
            problems.append(f"exit 2 with {len(lines)} lines on stderr")
        else:
            line = lines[0]
            if not line.startswith("moeopt: ") or len(line) < 20:
                problems.append(f"exit-2 line is not 'moeopt: <what>: <rule>': {line!r}")
            elif not any(name in line for name in known_names() | set(case.hints) | _given(case.args)):
                problems.append(f"exit-2 line names no field, file or option: {line!r}")
    return problems


def _given(args: list[str]) -> set[str]:
    """Options and arguments of the command line (a click error names the one it rejects)."""
    return {a.split("=")[0] for a in args[1:] if len(a) > 1} | {f"({a})" for a in args[1:]}


def describe(case: Case, out: Outcome) -> str:
    return (f"moeopt {' '.join(case.args)}\nnotes: {case.notes}\nexit {out.code} in {out.seconds:.2f} s\n"
            f"--- stdout ---\n{out.stdout[-1500:]}\n--- stderr ---\n{out.stderr[-1500:]}"
            + (f"\nexception: {out.exception!r}" if out.exception else ""))


def restore(folder: Path) -> None:
    """Make every file under ``folder`` deletable again (undo chmod 000)."""
    for p in folder.rglob("*"):
        try:
            p.chmod(0o755 if p.is_dir() else 0o644)
        except OSError:
            pass
