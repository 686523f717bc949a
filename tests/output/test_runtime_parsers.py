"""Exported launch commands fed to the runtime's OWN argument parser (SGLang, vLLM).

The runtimes do not install into moeopt's environment (CUDA builds, pinned torch), so the
parser runs in a throwaway environment named by ``MOEOPT_RUNTIME_PYTHON`` (its python), built
by ``.ci/runtime-parsers``; without it, or when the pinned runtime does not import there, the
test is skipped with the reason. ``tests/tools/runtime_parser.py parse`` parses every argv;
the parsed values must be the ones moeopt meant (the export's settings).
TensorRT-LLM does not install without CUDA: its exports are checked against the schema in
tests/fixtures/runtimes/ (tests/output/test_runtime_launch.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from optimizer.output.export import RUNTIME_VERSIONS
from tests.output.test_export import launch_args
from tests.output.test_runtime_launch import exported, options, program, schema_cases

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tests" / "tools" / "runtime_parser.py"
MODEL = "deepseek-ai/DeepSeek-V3"
SHELL = {'"$MODEL"': MODEL, "$MODEL": MODEL, "$NODE_RANK": "0", "$HEAD_ADDR": "10.0.0.1",
         "$PORT": "30001", "$((NODE_RANK * ": "$((0 * "}


def runtime_python(runtime: str) -> str:
    python = os.environ.get("MOEOPT_RUNTIME_PYTHON")
    if not python:
        pytest.skip("MOEOPT_RUNTIME_PYTHON not set: run .ci/runtime-parsers to build the "
                    f"throwaway environment with {runtime} {RUNTIME_VERSIONS[runtime]}")
    probe = subprocess.run([python, "-c", f"from importlib.metadata import version; "
                            f"print(version({runtime!r}))"], capture_output=True, text=True)
    if probe.returncode or probe.stdout.strip() != RUNTIME_VERSIONS[runtime]:
        pytest.skip(f"{runtime} {RUNTIME_VERSIONS[runtime]} not installed in {python} "
                    f"(found: {probe.stdout.strip() or probe.stderr.strip()[-200:]})")
    return python


def concrete(argv: list[str], out: Path) -> list[str]:
    """The argv with launch.sh's shell variables given values."""
    words = []
    for word in argv:
        word = word.replace("$HERE", str(out))
        for var, value in SHELL.items():
            word = word.replace(var, value)
        if word.startswith("$((0 * "):
            word = "0"
        words.append(word)
    return words


def parsed(python: str, runtime: str, argvs: list[list[str]], tmp_path: Path) -> list[dict]:
    path = tmp_path / f"{runtime}-argv.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in argvs))
    res = subprocess.run([python, str(TOOL), "parse", runtime, str(path)], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, f"{runtime} refused an exported command: {res.stderr[-2000:]}"
    return [json.loads(line) for line in res.stdout.splitlines()]


DEST = {  # our flag -> the parser's destination (argparse: dashes to underscores)
    "sglang": {},
    "vllm": {"-tp": "tensor_parallel_size", "-pp": "pipeline_parallel_size",
             "-dp": "data_parallel_size"},
}


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["sglang", "vllm"])
def test_runtime_parser_accepts_every_export(runtime, tmp_path):
    python = runtime_python(runtime)
    argvs, wanted = [], []
    for doc, inst in schema_cases(tmp_path):
        try:
            _, _, out = exported(doc, runtime, tmp_path, inst)
        except Exception as err:
            assert type(err).__name__ == "InputError", err
            continue
        for argv in launch_args(out)[1]:
            words = concrete(argv, out)
            skip = program(words)[1]
            rest = words[skip:]
            if runtime == "vllm":          # `vllm serve MODEL`: the parser's positional
                rest = [words[2]] + rest
            argvs.append(rest)
            wanted.append(options(words, skip))
    results = parsed(python, runtime, argvs, tmp_path)
    assert len(results) == len(argvs) >= 6
    for opts, ns in zip(wanted, results):
        for flag, value in opts.items():
            dest = DEST[runtime].get(flag, flag.lstrip("-").replace("-", "_"))
            assert dest in ns, f"{runtime}: {flag} parsed to nothing ({sorted(ns)[:5]}...)"
            got = ns[dest]
            if value is True:
                assert got is True, (flag, got)
            elif isinstance(got, (int, float)) and not isinstance(got, bool):
                assert got == type(got)(value), (flag, got, value)
            elif isinstance(got, dict):   # a config object: the keys we set have our values
                want = json.loads(value)
                assert {k: got.get(k) for k in want} == want, (flag, got, value)
            else:
                assert str(got) == value, (flag, got, value)
