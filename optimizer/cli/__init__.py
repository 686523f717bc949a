"""The command line: thin click commands, one module per command, registered statically in
``main``. Each parses its options, calls the library packages and prints; errors become exit
codes in ``common.run``. The only package that imports click; it may import every other one.
"""

from optimizer.cli.main import main

__all__ = ["main"]
