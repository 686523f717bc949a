"""What a configuration costs, in plain Python: the cost formulas (FLOPs, bytes, roofline times,
alpha-beta collectives), the rank layout of parallel degrees, expert loads, the admissible degree
tuples, the integer cost tables shared by the CP-SAT model and the checker, the timing arithmetic
(makespans, decode steps, lost time), configuration bounds and the greedy warm start, and the
physical bounds that explain infeasibility. ``units`` is the only place floats become integers.
Imports ``optimizer.inputs`` and ``optimizer.errors``; never ortools, pandas or click.
"""
