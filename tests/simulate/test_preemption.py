"""Preemption as vLLM v1 runs it (docs/simulator.md "Scheduling policy"): the newest running
request is preempted when a decode's KV block is missing, and no waiting request is admitted
in that step. Test-double step time, values by hand."""

from __future__ import annotations

import numpy as np

from optimizer.inputs.service import Requests
from optimizer.simulate.deployment import BOTH, Deployment, Knobs
from optimizer.simulate.engine import simulate
from tests.simulate.test_overload import MS, TokenTimer


def test_a_step_that_preempts_admits_nothing():
    """KV of 64 tokens (4 blocks of 16), C = 16, B = 2, step = 1 ms + 0.01 ms per token.
    A (prompt 16, output 40) and B (prompt 48, output 2) at t = 0.
    Step 1: A's prompt, 16 tokens, 1 block (1.16 ms): A's first token.
    Step 2: A decodes (its 2nd block), B admitted with 15 tokens (3rd block).
    Step 3: A decodes; B 15 more (kv 30, 4th block). Step 4: A; B the 2 tokens left in its
    block (kv 32, 3 tokens: 1.03 ms). Steps 5-17: A alone (1.01 ms), its kv 20 .. 32.
    Step 18: A needs a 5th block: B, the newest, is preempted (2 blocks freed, A takes one).
    B is back at the head of the queue and one block is free, enough for a 15-token chunk;
    but the step admits nothing: it runs A's decode alone (1 request, 1.01 ms). Step 19:
    A decodes and B is admitted again with 15 tokens (2 requests, 1.16 ms).
    (Readmitting B in step 18 would give steps 18 and 19 of 16 and 2 tokens instead.)
    Step 20: A and B's 1 token left in its block (1.02 ms). Step 34: A needs a 4th block,
    B (1 block) is preempted again and stays out while A holds all 4.
    A ends with step 40 (its 40th token): 3 x 1.16 + 1.03 + 1.16 + 1.02 + 34 x 1.01 = 41.03
    ms. B is then prefilled in 3 steps of 16 tokens (3 x 1.16) and decodes its 2nd token
    (1.01): 41.03 + 3.48 + 1.01 = 45.52 ms."""
    dep = Deployment(1, 1, Knobs(2, 16, 1, 1), 64, TokenTimer(), None, BOTH)
    out = simulate(dep, Requests(np.array([16, 48]), np.array([40, 2]), np.zeros(2)))
    busy = out.pools[0].busy[0]
    requests, durations = busy[:, 2].tolist(), (busy[:, 1] - busy[:, 0]).tolist()
    assert requests[:4] == [1, 2, 2, 2] and durations[:4] == [1_160_000] * 3 + [1_030_000]
    assert requests[4:17] == [1] * 13
    assert (requests[17], durations[17]) == (1, 1_010_000)  # step 18: preempts, admits nothing
    assert (requests[18], durations[18]) == (2, 1_160_000)  # step 19: B readmitted
    assert out.preemptions == 2
    assert out.finish_ns.tolist() == [41 * MS + 30_000, 45 * MS + 520_000]
