"""Shared pytest setup: the repo's ``benchmarks/`` directory is importable (``import bruteforce``)."""

import sys
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS_DIR) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS_DIR))
