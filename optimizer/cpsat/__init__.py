"""The CP-SAT deployment model and its solution: the build context, the model (which runs the
constraint families in ``constraints/``), per-layer placement bounds that prune configurations,
the deadline shared by every step, the lexicographic solve, and the explanation of infeasible
instances. The only package besides ``constraints`` and ``place`` that imports ortools. Imports
``inputs``, ``costs`` and ``plan`` (to evaluate the extracted plan).
"""
