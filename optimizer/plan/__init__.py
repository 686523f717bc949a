"""Plans: the ``Plan`` type, the ONE reader and writer of plan files (``files``: check, export
and report read plans through ``files.read_plan``; ``rules`` holds its one rule per optional
field, docs/plan-file.md), the evaluation of a plan from the plan alone (every constraint and
metric), and the audit of claims and figures a plan states. Imports ``inputs`` and ``costs``;
never ortools, so ``moeopt check`` stays independent of the solver.
"""
