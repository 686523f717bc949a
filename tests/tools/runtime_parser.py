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
    from vllm.entrypoints.openai.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    return parser, version("vllm"), ("vllm/entrypoints/openai/cli_args.py (make_arg_parser), "
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


def schema(runtime: str) -> dict:
    parser, ver, source = PARSERS[runtime]()
    options = {}
    for action in parser._actions:   # argparse keeps no public list of actions
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        spec: dict = {"type": option_type(action)}
        if action.choices is not None:
            spec["choices"] = sorted(str(c) for c in action.choices)
        for name in action.option_strings:
            options[name] = spec
    return {"runtime": runtime, "version": ver,
            "derived_from": {"package": f"{runtime}=={ver} from PyPI", "source": source,
                             "how": "tests/tools/runtime_parser.py schema (the installed parser)"},
            "cli": {"program": "sglang.launch_server" if runtime == "sglang" else "vllm serve",
                    "options": dict(sorted(options.items()))}}


def parse(runtime: str, argvs: list[list[str]]) -> list[dict]:
    parser = PARSERS[runtime]()[0]
    out = []
    for argv in argvs:
        ns = parser.parse_args(argv)
        out.append({k: v for k, v in vars(ns).items()
                    if isinstance(v, (int, float, str, bool, type(None), list, dict))})
    return out


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
