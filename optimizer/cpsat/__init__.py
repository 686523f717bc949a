"""The CP-SAT deployment model and its solution, one job per module:

- ``context``: the immutable data of a build (``ModelData``), the variables each constraint
  family provides, and the ``Context`` that carries them (families live in ``constraints/``);
- ``model``: ``build_context`` and ``DeploymentModel`` (pruning by bounds, the families in
  order, the objective); ``pruning``: per-layer placement bounds proven by CP-SAT;
- ``budget``: the deadline shared by every build and search of a command, and Ctrl-C;
- ``search``: solver settings, one stoppable CP-SAT search, plan extraction;
- ``solve``: the lexicographic solve and the greedy fallback;
- ``explain``: why an instance is infeasible, and the smallest feasible GPU count;
- ``service_model``, ``service_solve``: the choice of a service's configuration and knobs;
- ``disagg_model``, ``disagg_solve``, ``disagg_size``, ``disagg_auto``: disaggregated services
  (one prefill and one decode candidate with integer replica counts; the fewest GPUs for a
  rate; the aggregated side of ``--mode auto``).

The only package besides ``constraints`` and ``place`` that imports ortools. Imports
``inputs``, ``costs`` and ``plan`` (to evaluate the extracted plan).
"""
