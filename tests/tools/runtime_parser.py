"""Run INSIDE a throwaway environment where a runtime is installed (not moeopt's): builds the
runtime's own command-line parser and either dumps its options as a schema or parses argv.

    python tests/tools/runtime_parser.py schema sglang|vllm OUT.json
    python tests/tools/runtime_parser.py parse sglang|vllm ARGV.json   # one argv list per line

``schema`` writes tests/fixtures/runtimes/<runtime>-<version>.json: every option string of the
parser with its type ("switch" for flags without a value, "int", "float", "json", "str") and
choices. ``parse`` feeds each argv to ``parser.parse_args`` and prints the parsed values of
the options given as JSON, one line per argv; a rejected argv exits 2 with argparse's message.
Imports only the runtime and the standard library (moeopt is not installed there).
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version


def sglang_parser() -> tuple[argparse.ArgumentParser, str, str]:
    from sglang.srt.server_args import ServerArgs
    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    return parser, version("sglang"), "python/sglang/srt/server_args.py (ServerArgs.add_cli_args)"


def vllm_parser() -> tuple[argparse.ArgumentParser, str, str]:
    # Building the parser instantiates vLLM's config defaults, DeviceConfig among them, which
    # fails with "Failed to infer device type" on a machine without a GPU unless told the CPU
    # platform (vllm/platforms/__init__.py, cpu_platform_plugin). No option is affected.
    import os
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    return parser, version("vllm"), ("vllm/entrypoints/common/cli_args.py (make_arg_parser), "
                                      "vllm/engine/arg_utils.py (EngineArgs.add_cli_args)")


PARSERS = {"sglang": sglang_parser, "vllm": vllm_parser}


def option_type(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "switch"
    kind = action.type
    if kind is int:
        return "int"
    if kind is float:
        return "float"
    name = getattr(kind, "__name__", "") or type(kind).__name__
    if "json" in name.lower() or "loads" in name:
        return "json"
    return "str"


def literal_choices(runtime: str) -> dict[str, list]:
    """vLLM checks Literal-typed options (e.g. --kv-cache-dtype) only when it builds its
    configs, not in argparse: their allowed values, from EngineArgs' annotations."""
    if runtime != "vllm":
        return {}
    import dataclasses
    import sys as _sys
    import typing

    from vllm.engine.arg_utils import EngineArgs
    module = vars(_sys.modules[EngineArgs.__module__])
    out = {}
    for field in dataclasses.fields(EngineArgs):
        hint = field.type
        if isinstance(hint, str):          # postponed annotations: resolve one at a time
            try:
                hint = eval(hint, module)  # noqa: S307 (the runtime's own annotation text)
            except Exception:
                continue
        name = field.name
        for arm in (typing.get_args(hint) if typing.get_origin(hint) is typing.Union else ()) + (hint,):
            if typing.get_origin(arm) is typing.Literal:
                out[name] = list(typing.get_args(arm))
    return out


def schema(runtime: str) -> dict:
    parser, ver, source = PARSERS[runtime]()
    literals = literal_choices(runtime)
    options = {}
    for action in parser._actions:   # argparse keeps no public list of actions
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        spec: dict = {"type": option_type(action)}
        if action.choices is not None:
            spec["choices"] = sorted(str(c) for c in action.choices)
        elif action.dest in literals:
            spec["choices"] = sorted(str(c) for c in literals[action.dest])
        for name in action.option_strings:
            options[name] = spec
    return {"runtime": runtime, "version": ver,
            "derived_from": {"package": f"{runtime}=={ver} from PyPI", "source": source,
                             "how": "tests/tools/runtime_parser.py schema (the installed parser)"},
            "cli": {"program": "sglang.launch_server" if runtime == "sglang" else "vllm serve",
                    "options": dict(sorted(options.items()))}}


def parse(runtime: str, argvs: list[list[str]]) -> list[dict]:
    parser = PARSERS[runtime]()[0]
    literals = literal_choices(runtime)
    out = []
    for argv in argvs:
        ns = parser.parse_args(argv)
        for dest, allowed in literals.items():
            value = getattr(ns, dest, None)
            if value is not None and value not in allowed:
                parser.error(f"{dest}={value!r}: not one of {allowed} (EngineArgs)")
        out.append({k: plain(v) for k, v in vars(ns).items()})
    return out


def plain(value):
    """A parsed value as JSON data: config objects (vLLM parses --eplb-config into a
    dataclass) as dicts of their fields, anything else unknown as its repr."""
    import dataclasses
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    return repr(value)


def main() -> int:
    mode, runtime, path = sys.argv[1:4]
    if mode == "schema":
        with open(path, "w") as f:
            json.dump(schema(runtime), f, indent=1, sort_keys=False)
            f.write("\n")
        return 0
    with open(path) as f:
        argvs = [json.loads(line) for line in f if line.strip()]
    for parsed in parse(runtime, argvs):
        print(json.dumps(parsed, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
