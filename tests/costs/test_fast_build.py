"""The fast paths of the model build agree with the slow, obvious ones they replace."""

from __future__ import annotations

import random

import pytest

from optimizer.costs.config_bounds import hot_load_lower_bound
from optimizer.costs.greedy_placement import greedy_ranks
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.tables import LinkFacts
from optimizer.costs.units import LOAD_SCALE
from optimizer.cpsat.rebalance import rebalance


def _degree_tuples():
    """Every (tp, pp, dp, ep, etp) with tp*dp == etp*ep*edp on up to 64 GPUs, 8 per node
    and 4 per node."""
    for gpn in (4, 8):
        for tp in (1, 2, 4, 8):
            for pp in (1, 2, 3, 4):
                for dp in (1, 2, 3, 4, 8):
                    per_stage = tp * dp
                    for etp in (1, 2, 4):
                        for ep in (1, 2, 4, 8, 16):
                            if per_stage % (etp * ep) == 0 and tp * pp * dp <= 64:
                                yield gpn, Degrees(tp, pp, dp, ep, etp, per_stage // (etp * ep), 1)


def test_link_facts_in_closed_form_match_the_layout():
    """LinkFacts.of_megatron equals LinkFacts.of on the GpuSlot layout for every tuple."""
    count = 0
    for gpn, deg in _degree_tuples():
        assert LinkFacts.of_megatron(deg, gpn) == LinkFacts.of(megatron_layout(deg, gpn)), (gpn, deg)
        count += 1
    assert count > 300  # the loop really covered many layouts


def _hot(loads, ranks):
    return max(sum(loads[x] for x in r) for r in ranks)


@pytest.mark.parametrize("seed", range(20))
def test_rebalance_keeps_a_valid_placement_and_never_worsens_it(seed):
    rng = random.Random(seed)
    ep = rng.choice([2, 4, 8])
    n = ep * rng.choice([2, 4, 8])
    cuts = sorted(rng.randint(0, LOAD_SCALE) for _ in range(n - 1))
    loads = tuple(b - a for a, b in zip([0] + cuts, cuts + [LOAD_SCALE]))  # parts of LOAD_SCALE
    start = greedy_ranks(loads, ep)
    lower = hot_load_lower_bound(loads, ep)
    better = rebalance(loads, start, lower)
    assert sorted(x for r in better for x in r) == list(range(n))  # every expert once
    assert [len(r) for r in better] == [n // ep] * ep  # equal slots kept
    assert lower <= _hot(loads, better) <= _hot(loads, start)


def test_rebalance_fixes_a_placement_by_hand():
    # loads (in 10^4 parts of LOAD_SCALE = 10^6) 50, 45, 5, 0 on 2 ranks of 2: {50, 45} (hot
    # 95) | {5, 0}. Swapping 50 with 0 gives {45, 0} = 45 | {5, 50} = 55 (peak 55); swapping
    # 45 with 0 gives {50, 0} = 50 | {5, 45} = 50 (peak 50), the best swap; the bound is
    # max(ceil(100 / 2), 50 + 0) = 50: optimal, so it stops there.
    loads = (500_000, 450_000, 50_000, 0)
    better = rebalance(loads, [[0, 1], [2, 3]], hot_load_lower_bound(loads, 2))
    assert sorted(map(sorted, better)) == [[0, 3], [1, 2]]


# --- vectorised configuration bounds and greedy split times (against the scalar code) ---

def _instance_data(name: str, **edits):
    """(cfgs, loads, moe ids, memory cap) of a shipped instance, optionally edited."""
    import json
    from pathlib import Path

    from optimizer.cpsat.model import build_context
    from optimizer.inputs.schema import Instance
    doc = json.loads((Path(__file__).resolve().parents[2] / "instances" / f"{name}.json").read_text())
    for path, value in edits.items():
        node = doc
        *head, last = path.split(".")
        for part in head:
            node = node[part]
        node[last] = value
    inst = Instance.model_validate(doc)
    data = build_context(inst, inst.hardware.num_gpus)
    return data.cfgs, data.loads, data.moe_ids, data.memory_cap_bytes


CASES = [("10b_moe", {}), ("mixtral_8x7b_bf16_h100", {}), ("qwen3_30b_a3b_h200", {}),
         ("deepseek_v3_fp8_h200", {"hardware.num_gpus": 64}),
         # a tight memory cap makes the memory side of the split bind
         ("deepseek_v3_fp8_h200", {"hardware.num_gpus": 32, "requirements.max_memory_gb": 60})]


@pytest.mark.parametrize("name,edits", CASES)
def test_config_bounds_many_equals_config_bounds(name, edits):
    from optimizer.costs.config_bounds import config_bounds, config_bounds_many
    cfgs, loads, moe_ids, cap = _instance_data(name, **edits)
    eps = sorted({c.deg.ep for c in cfgs})
    for hot_of in ({ep: [hot_load_lower_bound(row, ep) for row in loads] for ep in eps},
                   {ep: [_hot(row, greedy_ranks(row, ep)) for row in loads] for ep in eps}):
        fast = config_bounds_many(list(cfgs), hot_of, moe_ids, cap)
        slow = [config_bounds(c, hot_of[c.deg.ep], moe_ids, cap) for c in cfgs]
        assert fast == slow
    assert any(c.deg.pp > 2 for c in cfgs)  # the stage search really ran on several stages
    if "requirements.max_memory_gb" in edits:  # the memory side of the split really bound
        assert any(not b.memory_fits for b in slow) and any(b.memory_fits for b in slow)


@pytest.mark.parametrize("name,edits", CASES[:4])
def test_split_times_equal_batch_times(name, edits):
    from optimizer.costs.config_bounds import _prefix_sums, _split_times, stages_of
    from optimizer.costs.timing import batch_times
    cfgs, loads, moe_ids, _ = _instance_data(name, **edits)
    hot_of = {ep: dict(zip(moe_ids, (_hot(row, greedy_ranks(row, ep)) for row in loads)))
              for ep in {c.deg.ep for c in cfgs}}
    sums = _prefix_sums(list(cfgs), hot_of, moe_ids)
    rng = random.Random(1)
    for k, c in enumerate(cfgs):
        n, p = len(c.memory.layer_weights), c.deg.pp
        cuts = sorted(rng.sample(range(1, n), p - 1))
        counts = [b - a for a, b in zip([0] + cuts, cuts + [n])]
        assert _split_times(c, counts, sums[k]) == batch_times(c, stages_of(counts), hot_of[c.deg.ep])[1:]
