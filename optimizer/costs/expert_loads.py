"""Routed-token load per expert and layer, as integer parts of ``units.LOAD_SCALE``."""

from __future__ import annotations

import random

from optimizer.costs.units import LOAD_SCALE
from optimizer.errors import InputError
from optimizer.inputs.schema import CountsLoad, FileLoad, Instance, PowerLawLoad, UniformLoad


def largest_remainder(weights: list[float], total: int) -> list[int]:
    """Integers proportional to ``weights`` that sum to exactly ``total`` (Hamilton's
    method; ties go to the lower index, so the result is deterministic)."""
    weight_sum = float(sum(weights))
    exact = [w * total / weight_sum for w in weights]
    parts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def power_law_weights(num_experts: int, exponent: float, rng: random.Random) -> list[float]:
    """Weights (i+1)^-a over a random order of the experts, a drawn in [0.75, 1.25] x
    exponent so that layers differ in skew as well as in which experts are hot."""
    layer_exponent = exponent * (0.75 + 0.5 * rng.random())
    order = list(range(num_experts))
    rng.shuffle(order)
    weights = [0.0] * num_experts
    for position, expert in enumerate(order):
        weights[expert] = (position + 1) ** -layer_exponent
    return weights


def layer_weights(inst: Instance) -> list[list[float]]:
    """[MoE layer][num_experts] relative routed load, before scaling."""
    spec, m = inst.expert_load, inst.model
    moe = len(m.moe_layer_ids)
    from optimizer.inputs.load_files import MAX_VALUES  # lazy: numpy only when loads are read
    if moe * m.num_experts > MAX_VALUES:
        raise InputError(f"model.num_experts={m.num_experts}: {moe} MoE layers x {m.num_experts} experts "
                         f"= {moe * m.num_experts} expert loads; at most {MAX_VALUES}")
    if isinstance(spec, UniformLoad):
        return [[1.0] * m.num_experts for _ in range(moe)]
    if isinstance(spec, PowerLawLoad):
        rng = random.Random(spec.seed)
        return [power_law_weights(m.num_experts, spec.exponent, rng) for _ in range(moe)]
    if isinstance(spec, FileLoad):
        return _file_weights(spec.path, moe, m.num_experts)
    assert isinstance(spec, CountsLoad)
    return [[float(c) for c in row] for row in spec.counts]


def _file_weights(path: str, num_moe_layers: int, num_experts: int) -> list[list[float]]:
    """Rows of a load file, checked against the model's MoE layers and experts."""
    from optimizer.inputs.load_files import moe_layers, read_loads
    _, counts = moe_layers(*read_loads(path))
    if counts.shape != (num_moe_layers, num_experts):
        raise InputError(f"expert_load.path={path!r}: {counts.shape[0]} MoE layers x {counts.shape[1]} experts, "
                         f"expected {num_moe_layers} x {num_experts}")
    return [[float(c) for c in row] for row in counts.tolist()]


def expert_loads(inst: Instance) -> tuple[tuple[int, ...], ...]:
    """[MoE layer][num_experts] loads in parts per LOAD_SCALE (order: moe_layer_ids); each
    layer sums to it."""
    return tuple(tuple(largest_remainder(w, LOAD_SCALE)) for w in layer_weights(inst))
