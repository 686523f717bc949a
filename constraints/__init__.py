"""One module per constraint family; each exposes ``build(ctx)``.

``MODULES`` is the order in which ``optimizer.cpsat.model`` runs them: degrees first (the
one-hot choice every other family is enforced by), then placement (hot loads), pipeline
(layer times, stage times, makespan), and the requirement families.
"""

from constraints import degrees, latency, memory, pipeline, placement, throughput

MODULES = [degrees, placement, pipeline, memory, latency, throughput]
