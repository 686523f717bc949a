"""``python -m optimizer.cli``: the moeopt command line."""

from optimizer.cli.main import main

main()
