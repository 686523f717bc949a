"""The disaggregated plan reader (optimizer/plan/pools.py): pools read per replica with the
one plan reader, one-line errors naming pools[i].field, and the replica layout by hand."""

from __future__ import annotations

import copy

import pytest

from optimizer.errors import InputError
from optimizer.plan.pools import INTER_NODE, INTRA_NODE, read_pools, replica_first_ranks, transfer_link


def _replica(tp: int, dp: int, ep: int) -> dict:
    return {"degrees": {"tp": tp, "pp": 1, "dp": dp, "ep": ep}, "num_experts": 8,
            "stages": [{"stage": 0, "layers": [0, 1, 2, 3]}],
            "serving": {"max_running_requests": 64, "prefill_chunk_tokens": 2048,
                        "prefill_micro_batches": 1, "decode_micro_batches": 1}}


def _doc(prefill_replicas: int = 2, decode_replicas: int = 1) -> dict:
    return {"schema_version": 1, "instance": "toy", "status": "feasible", "mode": "disagg",
            # 2 x (tp 2 x dp 2 = 4 GPUs) + 1 x (tp 1 x dp 8 = 8 GPUs) = 16
            "num_gpus": prefill_replicas * 4 + decode_replicas * 8,
            "pools": [{"role": "prefill", "replicas": prefill_replicas, "num_gpus": 4, **_replica(2, 2, 4)},
                      {"role": "decode", "replicas": decode_replicas, "num_gpus": 8, **_replica(1, 8, 8)}]}


def test_pools_read_prefill_first_with_their_knobs():
    doc = _doc()
    doc["pools"].reverse()  # the order in the file does not matter
    prefill, decode = read_pools(doc)
    assert (prefill.role, prefill.replicas, prefill.gpus_per_replica, prefill.num_gpus) == ("prefill", 2, 4, 8)
    assert (decode.role, decode.replicas, decode.gpus_per_replica, decode.num_gpus) == ("decode", 1, 8, 8)
    assert prefill.plan.deg.tp == 2 and decode.plan.deg.dp == 8
    assert prefill.knobs.max_running_requests == 64 and decode.knobs.prefill_chunk_tokens == 2048


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["pools"].pop(), "pools: must be a list of 2 objects"),
    (lambda d: d["pools"][1].update(role="prefill"), "pools[1].role='prefill': a second prefill pool"),
    (lambda d: d["pools"][0].update(role="both"), "pools[0].role='both'"),
    (lambda d: d["pools"][0].update(replicas=0), "pools[0].replicas=0"),
    (lambda d: d["pools"][0].update(replicas=True), "pools[0].replicas=True"),
    (lambda d: d.update(num_gpus=17), "num_gpus=17: the pools use 16 GPUs"),
    (lambda d: d["pools"][0].update(num_gpus=5), "pools[0]"),  # tp*pp*dp = 4 != 5
    (lambda d: d["pools"][1]["degrees"].update(dp=6, ep=2) or d["pools"][1].update(num_gpus=6),
     "pools[1].num_gpus=6: a replica's GPUs must divide the 8 GPUs per node"),
])
def test_broken_pools_fail_in_one_line(mutate, message):
    doc = copy.deepcopy(_doc())
    mutate(doc)
    with pytest.raises(InputError) as err:
        read_pools(doc, source="p.json")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_replica_layout_by_hand():
    # sizes 4 (prefill, 3 replicas) and 8 (decode, 2): decode first (larger): ranks 0 and 8,
    # then prefill from 16: 16, 20, 24
    assert replica_first_ranks({"prefill": (3, 4), "decode": (2, 8)}) == {"prefill": (16, 20, 24), "decode": (0, 8)}
    # equal sizes: prefill first
    assert replica_first_ranks({"prefill": (1, 2), "decode": (2, 2)}) == {"prefill": (0,), "decode": (2, 4)}
    # 2-GPU prefill x3 and a 4-GPU decode on 8-GPU nodes: decode 0..3, prefill 4, 6, 8 (no straddle)
    assert replica_first_ranks({"prefill": (3, 2), "decode": (1, 4)}) == {"prefill": (4, 6, 8), "decode": (0,)}


def test_transfer_link_is_intra_node_only_when_everything_fits_one_node():
    assert transfer_link(8, 8) == INTRA_NODE
    assert transfer_link(9, 8) == INTER_NODE
