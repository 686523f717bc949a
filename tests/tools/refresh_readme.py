"""Rewrite every README block marked ``<!-- readme-check: COMMAND -->`` with COMMAND's output
today (run from a scratch folder that sees ``instances/``, as tests/cli/test_readme.py does).

Usage: ``python tests/tools/refresh_readme.py`` from the repository root, after a change that
alters what a marked command prints; review the diff before committing it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKED = re.compile(r"(<!-- readme-check: (.+?) -->\n```[a-z]*\n)(.*?)(```)", re.S)


def output_of(command: str) -> str:
    args = shlex.split(command)
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "instances").symlink_to(REPO / "instances")
        res = subprocess.run([sys.executable, "-m", "optimizer.cli", *args[1:]], capture_output=True,
                             text=True, cwd=scratch, timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"{command}: exit {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def main() -> None:
    text = README.read_text()
    text = MARKED.sub(lambda m: m.group(1) + output_of(m.group(2)) + m.group(4), text)
    README.write_text(text)


if __name__ == "__main__":
    main()
