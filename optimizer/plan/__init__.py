"""Plans: the ``Plan`` type, the ONE reader and writer of plan files (every command reads plans
through ``files.plan_from_file``), the evaluation of a plan from the plan alone (every constraint
and metric), and the audit of claims a plan states. Imports ``inputs`` and ``costs``; never
ortools, so ``moeopt check`` stays independent of the solver.
"""
