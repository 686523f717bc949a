"""The placement in service (``moeopt place --current PATH``), read from one of three JSON
forms into ``{layer id: [G][S] int64 expert ids}``:

- a moeopt placement (``moeopt place --format json``): ``{"layers": [{"layer": L,
  "ranks": [[expert, ...] per rank]}]}``;
- a plan file (``moeopt solve`` / ``check``): ``{"expert_placement": {"L": [[...] per rank]}}``;
- a runtime's expert-location map (SGLang's ``--init-expert-location`` file, vLLM's EPLB
  state dumped as JSON): ``{"physical_to_logical_map": [layers][G*S]}``, where physical
  slot ``i`` lives on rank ``i // S`` and row ``L`` is layer ``L`` (the same indexing as
  SGLang's ``logical_count``).

Every error is one :class:`InputError` line naming the field, the value and the rule.
"""

from __future__ import annotations

import numpy as np

from optimizer.errors import InputError
from optimizer.inputs.files import read_json


def read_current(path: str, layer_ids: list[int], num_experts: int, num_ranks: int,
                 slots: int) -> dict[int, np.ndarray]:
    """``{layer: [num_ranks][slots] expert ids}`` for every layer of ``layer_ids``."""
    doc = read_json(path, "--current")
    if not isinstance(doc, dict):
        raise InputError(f"--current {path}: a JSON object is required (a moeopt placement, a plan "
                         f"file or an expert-location map), not {type(doc).__name__}")
    if "layers" in doc:
        rows = _from_layers(doc["layers"], path)
    elif "expert_placement" in doc:
        rows = _from_plan(doc["expert_placement"], path)
    elif "physical_to_logical_map" in doc:
        rows = _from_physical(doc["physical_to_logical_map"], path, slots)
    else:
        raise InputError(f"--current {path}: none of the keys 'layers' (moeopt placement), "
                         f"'expert_placement' (plan) or 'physical_to_logical_map' (SGLang/vLLM)")
    out = {}
    for layer in layer_ids:
        if layer not in rows:
            raise InputError(f"--current {path}: no placement for MoE layer {layer} of the loads")
        out[layer] = _checked(rows[layer], f"--current {path}: layer {layer}", num_experts, num_ranks, slots)
    return out


def _from_layers(layers, path: str) -> dict[int, object]:
    if not isinstance(layers, list):
        raise InputError(f"--current {path}: 'layers' must be a list of {{layer, ranks}} objects")
    out = {}
    for i, lay in enumerate(layers):
        if not isinstance(lay, dict) or not isinstance(lay.get("layer"), int) or "ranks" not in lay:
            raise InputError(f"--current {path}: layers[{i}] must be an object with an integer "
                             f"'layer' and 'ranks'")
        out[lay["layer"]] = lay["ranks"]
    return out


def _from_plan(placement, path: str) -> dict[int, object]:
    if not isinstance(placement, dict):
        raise InputError(f"--current {path}: 'expert_placement' must map layer ids to rank lists")
    out = {}
    for key, ranks in placement.items():
        if not str(key).isdigit():
            raise InputError(f"--current {path}: expert_placement key {key!r} is not a layer index")
        out[int(key)] = ranks
    return out


def _from_physical(table, path: str, slots: int) -> dict[int, object]:
    if not isinstance(table, list) or not all(isinstance(row, list) for row in table):
        raise InputError(f"--current {path}: 'physical_to_logical_map' must be [layers][physical slots]")
    out = {}
    for layer, row in enumerate(table):
        if len(row) % slots:
            raise InputError(f"--current {path}: physical_to_logical_map[{layer}] has {len(row)} slots, "
                             f"not a multiple of {slots} slots per rank")
        out[layer] = [row[i:i + slots] for i in range(0, len(row), slots)]
    return out


def _checked(ranks, where: str, num_experts: int, num_ranks: int, slots: int) -> np.ndarray:
    """``ranks`` as [G][S] int64 after the rules: G ranks of S ids in [0, E), no expert twice
    on one rank, every expert somewhere."""
    if not isinstance(ranks, list) or len(ranks) != num_ranks:
        got = len(ranks) if isinstance(ranks, list) else type(ranks).__name__
        raise InputError(f"{where}: {got} ranks; the placement must have --ep={num_ranks} ranks")
    for g, row in enumerate(ranks):
        if not isinstance(row, list) or len(row) != slots:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(f"{where}: rank {g} holds {got} experts; every rank holds "
                             f"(experts + redundant) / ep = {slots}")
        for e in row:
            if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < num_experts:
                raise InputError(f"{where}: rank {g} holds expert {e!r}; ids are integers in "
                                 f"[0, {num_experts})")
        if len(set(row)) != len(row):
            raise InputError(f"{where}: rank {g} holds an expert twice ({sorted(row)}); replicas "
                             f"of one expert sit on distinct ranks")
    arr = np.array(ranks, dtype=np.int64)
    missing = np.setdiff1d(np.arange(num_experts), arr.ravel())
    if len(missing):
        raise InputError(f"{where}: expert {int(missing[0])} is on no rank; every expert needs a replica")
    return arr
