"""Run INSIDE a throwaway environment holding the routers (``.ci/runtime-parsers``): parses
exported router commands with the router's OWN argument parser.

    python tests/tools/router_parser.py sglang|vllm ARGV.jsonl   # one argv list per line

Prints per argv the parsed PD settings as JSON (``pd_disaggregation``, ``prefill_urls`` as
[url, bootstrap port or null], ``decode_urls``, ``host``, ``port``); a rejected argv exits 2
with argparse's message. Imports only the router package and the standard library.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    runtime, path = sys.argv[1:3]
    if runtime == "sglang":
        from sglang_router.launch_router import parse_router_args
    else:
        from vllm_router.launch_router import parse_router_args
    with open(path) as f:
        argvs = [json.loads(line) for line in f if line.strip()]
    for argv in argvs:
        args = parse_router_args(argv)
        pd = getattr(args, "pd_disaggregation", False) or getattr(args, "vllm_pd_disaggregation", False)
        print(json.dumps({"pd_disaggregation": bool(pd),
                          "prefill_urls": [list(u) for u in args.prefill_urls],
                          "decode_urls": list(args.decode_urls), "host": args.host,
                          "port": args.port}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
