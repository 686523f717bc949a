"""The README's example outputs are today's outputs.

A fenced block preceded by ``<!-- readme-check: COMMAND -->`` is the complete stdout of
COMMAND (a ``moeopt`` command line) run from a scratch folder that sees the repository's
``instances/``; wall-clock figures are masked on both sides (``MASKS``). Blocks without the
marker (abridged ones) are not checked.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MARKED = re.compile(r"<!-- readme-check: (.+?) -->\n```[a-z]*\n(.*?)```", re.S)
# timings vary from run to run: "wall 1.12 s" -> "wall <s> s"
MASKS = [(re.compile(r"wall \d+(\.\d+)? s"), "wall <s> s")]
_script = shutil.which("moeopt", path=str(Path(sys.executable).parent))
MOEOPT = [_script] if _script else [sys.executable, "-c", "from optimizer.cli import main; main()"]


def mask(text: str) -> str:
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return text


def marked_blocks() -> list[tuple[str, str]]:
    return MARKED.findall(README.read_text())


def test_readme_has_checked_examples():
    commands = [cmd for cmd, _ in marked_blocks()]
    assert "moeopt solve instances/10b_moe.json" in commands, commands


@pytest.mark.parametrize("command,expected", marked_blocks(), ids=[c for c, _ in marked_blocks()])
@pytest.mark.slow
def test_example_output_is_current(command, expected, tmp_path):
    args = shlex.split(command)
    assert args[0] == "moeopt", command
    (tmp_path / "instances").symlink_to(REPO / "instances")
    res = subprocess.run(MOEOPT + args[1:], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert mask(res.stdout) == mask(expected), (
        f"README block for `{command}` is stale; today's output:\n{res.stdout}")


def test_masks_only_timings():
    """The mask hides the wall time and nothing else (a changed figure still fails)."""
    a = "status optimal, gap 0.0000, wall 1.12 s, 2 configurations"
    assert mask(a) == mask(a.replace("1.12", "13.5"))
    assert mask(a) != mask(a.replace("2 configurations", "3 configurations"))
