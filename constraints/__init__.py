"""One module per CP-SAT constraint family.

A family module exposes:

- ``NEEDS``: names of the variables it reads (provided by earlier families), e.g.
  ``("degrees", "placement")``;
- ``PROVIDES``: the name under which its variables are stored, or None when it only adds
  constraints;
- ``build(ctx: Context)``: adds its variables and constraints to ``ctx.model`` from the
  immutable ``ctx.data`` and the variables it needs (``ctx.need(name)``, or the typed
  ``ctx.choice``, ``ctx.placement``, ``ctx.timing``), and returns its variables (a frozen
  dataclass of ``optimizer.cpsat.context``) or None.

``FAMILIES`` is the order in which ``optimizer.cpsat.model`` runs them: degrees first (the
one-hot choice every other family is enforced by), then placement (hot loads), pipeline
(layer times, stage times, makespan), and the requirement families. Before a family runs,
the model checks that every name in its ``NEEDS`` has been provided (FamilyOrderError
otherwise). To add a family: write the module with these three names, and insert it in
``FAMILIES`` after every family it needs.
"""

from constraints import degrees, latency, memory, pipeline, placement, throughput

FAMILIES = [degrees, placement, pipeline, memory, latency, throughput]
