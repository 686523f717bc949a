"""moeopt: the best parallel deployment of a Mixture-of-Experts model on a GPU cluster.

Data flow: instances/*.json -> schema.Instance -> candidates (admissible degree tuples)
-> tables (integer costs per tuple, from costmodel) -> model.DeploymentModel (CP-SAT, with
constraints/*) -> solve -> evaluate (recomputed from the plan alone) -> plan/report ->
results/<instance>/plan.json.
"""

__version__ = "0.1.0"

# The Python API (docs/python-api.md), imported on first use so ``import optimizer`` stays
# cheap (no pandas, pydantic or OR-Tools until a function is called).
import sys
import types

__all__ = ["load_instance", "solve", "check", "pareto", "simulate", "CheckReport", "Simulation"]


def __getattr__(name: str):
    if name in __all__:
        from optimizer import api
        return getattr(api, name)
    raise AttributeError(f"module 'optimizer' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The ``optimizer`` module, keeping its API names: the import system binds every imported
    subpackage as an attribute of its parent, and the subpackage ``optimizer.simulate`` must
    not replace the function ``simulate`` (the subpackage stays importable by its full name)."""

    def __setattr__(self, name: str, value) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
