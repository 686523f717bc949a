"""The placement in service (``moeopt place --current PATH``, ``moeopt solve --current``),
read from one of three JSON forms into ``{layer id: [G][S] int64 expert ids}``:

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
                 slots: int, field: str = "--current") -> dict[int, np.ndarray]:
    """``{layer: [num_ranks][slots] expert ids}`` for every layer of ``layer_ids``; errors
    name ``field`` (the option or instance field that gave ``path``)."""
    where = f"{field} {path}"
    rows = _rows(_document(path, field), where, slots)
    out = {}
    for layer in layer_ids:
        if layer not in rows:
            raise InputError(f"{where}: no placement for MoE layer {layer} of the loads")
        out[layer] = _checked(rows[layer], f"{where}: layer {layer}", num_experts, num_ranks, slots)
    return out


def current_shape(path: str, layer_ids: list[int], num_experts: int,
                  field: str = "--current") -> tuple[int | None, int]:
    """(EP ranks, physical slots per layer) of the placement in ``path``, after the rules of
    :func:`read_current` at that shape. An expert-location map states no rank count (None):
    its rows are checked for equal lengths, ids in range and every expert present; the rule
    "no expert twice on one rank" waits until a rank count is given."""
    where = f"{field} {path}"
    doc = _document(path, field)
    if _kind(doc, where) == "physical_to_logical_map":
        rows = _rows(doc, where, 1)            # one slot per "rank": ids and coverage only
        lengths = {len(rows[layer]) for layer in layer_ids if layer in rows}
        if len(lengths) > 1:
            raise InputError(f"{where}: physical_to_logical_map rows of the MoE layers have "
                             f"{sorted(lengths)} slots; every layer has the same slots")
        total = lengths.pop() if lengths else 0
        read_current(path, layer_ids, num_experts, total, 1, field)
        return None, total
    rows = _rows(doc, where, 1)
    layer = layer_ids[0]
    if layer not in rows:
        raise InputError(f"{where}: no placement for MoE layer {layer} of the loads")
    first = rows[layer]
    if not isinstance(first, list) or not first or not isinstance(first[0], list):
        raise InputError(f"{where}: layer {layer}: the ranks must be a non-empty list of expert-id lists")
    num_ranks, slots = len(first), len(first[0])
    read_current(path, layer_ids, num_experts, num_ranks, slots, field)
    return num_ranks, num_ranks * slots


def _document(path: str, field: str) -> dict:
    doc = read_json(path, field)
    if not isinstance(doc, dict):
        raise InputError(f"{field} {path}: a JSON object is required (a moeopt placement, a plan "
                         f"file or an expert-location map), not {type(doc).__name__}")
    return doc


def _kind(doc: dict, where: str) -> str:
    for key in ("layers", "expert_placement", "physical_to_logical_map"):
        if key in doc:
            return key
    raise InputError(f"{where}: none of the keys 'layers' (moeopt placement), "
                     f"'expert_placement' (plan) or 'physical_to_logical_map' (SGLang/vLLM)")


def _rows(doc: dict, where: str, slots: int) -> dict[int, object]:
    kind = _kind(doc, where)
    if kind == "layers":
        return _from_layers(doc["layers"], where)
    if kind == "expert_placement":
        return _from_plan(doc["expert_placement"], where)
    return _from_physical(doc["physical_to_logical_map"], where, slots)


def _from_layers(layers, where: str) -> dict[int, object]:
    if not isinstance(layers, list):
        raise InputError(f"{where}: 'layers' must be a list of {{layer, ranks}} objects")
    out = {}
    for i, lay in enumerate(layers):
        if not isinstance(lay, dict) or not isinstance(lay.get("layer"), int) or "ranks" not in lay:
            raise InputError(f"{where}: layers[{i}] must be an object with an integer "
                             f"'layer' and 'ranks'")
        out[lay["layer"]] = lay["ranks"]
    return out


def _from_plan(placement, where: str) -> dict[int, object]:
    if not isinstance(placement, dict):
        raise InputError(f"{where}: 'expert_placement' must map layer ids to rank lists")
    out = {}
    for key, ranks in placement.items():
        if not str(key).isdigit():
            raise InputError(f"{where}: expert_placement key {key!r} is not a layer index")
        out[int(key)] = ranks
    return out


def _from_physical(table, where: str, slots: int) -> dict[int, object]:
    if not isinstance(table, list) or not all(isinstance(row, list) for row in table):
        raise InputError(f"{where}: 'physical_to_logical_map' must be [layers][physical slots]")
    out = {}
    for layer, row in enumerate(table):
        if len(row) % slots:
            raise InputError(f"{where}: physical_to_logical_map[{layer}] has {len(row)} slots, "
                             f"not a multiple of {slots} slots per rank")
        out[layer] = [row[i:i + slots] for i in range(0, len(row), slots)]
    return out


def _checked(ranks, where: str, num_experts: int, num_ranks: int, slots: int) -> np.ndarray:
    """``ranks`` as [G][S] int64 after the rules: G ranks of S ids in [0, E), no expert twice
    on one rank, every expert somewhere."""
    if not isinstance(ranks, list) or len(ranks) != num_ranks:
        got = len(ranks) if isinstance(ranks, list) else type(ranks).__name__
        raise InputError(f"{where}: {got} ranks; every layer of the placement must have {num_ranks} EP "
                         f"ranks")
    for g, row in enumerate(ranks):
        if not isinstance(row, list) or len(row) != slots:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise InputError(f"{where}: rank {g} holds {got} experts; every rank holds "
                             f"(experts + redundant) / EP ranks = {slots}")
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
