"""Equal optima of the disaggregated model are broken by one rule (fewest replicas, then
fewest prefill replicas, then the earliest decode and prefill candidates), whatever the
number of CP-SAT workers or the seed: a sweep and a solve of the same count name the same
pools (they once printed 1x2 + 3x2 and 2x1 + 6x1 for one tiny instance under load)."""

from __future__ import annotations

import pytest

from optimizer.costs.layout import Degrees
from optimizer.costs.serving.disagg import INTRA_NODE, DecodeCandidate, PrefillCandidate, TransferClass
from optimizer.cpsat.disagg_model import DisaggModel
from tests.cpsat.test_disagg_model import _pairs

DEG = Degrees(1, 1, 1, 1, 1, 1, 1)
ORDER = [("goodput", "max"), ("throughput", "max"), ("gpus", "min")]


def _tied():
    """Per GPU, every candidate serves 1 request/s with capacity 2 requests/s: on 8 GPUs of
    one node, every split into a prefill and a decode pool of 4 GPUs each ties in goodput
    (4), throughput and GPUs (8). Candidates are listed larger-first so that the rule's
    choice is not simply index 0 everywhere."""
    decode = [DecodeCandidate(DEG, None, g, 1.0 * g, 2.0 * g, 0, 100) for g in (4, 2, 1)]
    prefill = []
    for g in (2, 1, 4):
        for g_d in (4, 2, 1):
            prefill.append(PrefillCandidate(DEG, None, g, TransferClass(INTRA_NODE, min(g, g_d)), 0.0,
                                            1.0 * g, 2.0 * g, 0, 100))
    # one PrefillCandidate per (size, link count); duplicates by links are merged as the search does
    seen, unique = set(), []
    for c in prefill:
        if (c.gpus, c.transfer) not in seen:
            seen.add((c.gpus, c.transfer))
            unique.append(c)
    return unique, decode


def _brute_force_choice(prefill, decode, budget):
    """The rule applied to every optimum by enumeration (``_pairs``: every feasible pair and
    count with its goodput, throughput and GPUs)."""
    scored = [((g, t, -gpus), (xp + xd, xp, j, i))
              for (g, t, gpus), (i, j, xp, xd) in _pairs(prefill, decode, budget, budget, True)]
    best = max(score for score, _ in scored)
    keys = [key for score, key in scored if score == best]
    return min(keys), len(keys)


@pytest.mark.parametrize("workers,seed", [(1, 0), (4, 0), (8, 1), (8, 7)])
def test_equal_optima_give_one_answer(workers, seed):
    prefill, decode = _tied()
    (replicas, xp, j, i), ties = _brute_force_choice(prefill, decode, 8)
    assert ties > 1  # the instance really has several optima
    choice = DisaggModel(prefill, decode, 8, 8).solve(ORDER, 20.0, workers=workers, seed=seed)
    assert choice.proven
    assert (choice.prefill_replicas + choice.decode_replicas, choice.prefill_replicas,
            choice.decode, choice.prefill) == (replicas, xp, j, i)
    # by hand: 4 + 4 GPUs as one 4-GPU prefill and one 4-GPU decode replica (2 replicas)
    assert (prefill[choice.prefill].gpus, decode[choice.decode].gpus, replicas, xp) == (4, 4, 2, 1)
