"""moeopt: the best parallel deployment of a Mixture-of-Experts model on a GPU cluster.

Data flow: instances/*.json -> schema.Instance -> candidates (admissible degree tuples)
-> tables (integer costs per tuple, from costmodel) -> model.DeploymentModel (CP-SAT, with
constraints/*) -> solve -> evaluate (recomputed from the plan alone) -> plan/report ->
results/<instance>/plan.json.
"""

__version__ = "0.1.0"
