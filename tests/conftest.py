"""Shared pytest setup. The repository root is on ``sys.path`` (``pythonpath`` in
pyproject.toml), so tests import the reference oracles as ``tests.oracles`` and the benchmark
helpers as ``benchmarks``."""
