"""An overloaded replica (docs/simulator.md "Overload"): with a backlog every step is filled to
the token budget C, a running request gains one token per such step, so nothing completes
for the first O full steps (O output tokens); afterwards completions reach the budget bound
C / (P + O - 1) requests per step. A window that ends before the fill-up does reads zero
throughput: that is the engine's fill-up, not a collapse. Test-double step time, by hand."""

from __future__ import annotations

import numpy as np

from optimizer.inputs.service import Requests
from optimizer.simulate.deployment import BOTH, Deployment, Knobs
from optimizer.simulate.engine import simulate

MS = 1_000_000  # ns


class TokenTimer:
    """Test double of ``StepTimer``: a step of n tokens (prompt chunks plus decodes) takes
    1 ms + 0.01 ms * n, whatever the mix (micro-batches ignored: every knob here is 1)."""

    def batch(self, chunks, decode_contexts):
        return sum(n for _, n, _ in chunks) + len(decode_contexts)

    def ns(self, tokens, micro_batches=1):
        return 0 if tokens == 0 else MS + 10_000 * tokens


def replica(cap: int = 1000, chunk: int = 100) -> Deployment:
    """One queue, KV for 10^7 tokens (never short: no preemption)."""
    return Deployment(1, 1, Knobs(cap, chunk, 1, 1), 10**7, TokenTimer(), None, BOTH)


def test_backlog_fills_every_step_and_completes_nothing_for_output_steps():
    """2,000 requests (prompt P = 10, output O = 41) at t = 0, C = 100, B = 1000.
    Step 1 prefills 10 prompts (100 tokens, 1 + 0.01 * 100 = 2 ms): their first tokens.
    While prompts wait, each later step holds its decodes plus prompt chunks up to C = 100
    tokens, so it takes 2 ms too; a request gets its token k at its k-th step, so the first
    completions are step 1's 10 requests, at 41 x 2 = 82 ms: none before, although the
    replica computes 100 tokens every 2 ms.
    Every token is computed once (no preemption): N (P + O - 1) = 2000 x 50 = 100,000
    tokens, so the makespan is steps x 1 ms + 100,000 x 0.01 ms = steps + 1,000 ms, and at
    least 1,000 steps are run. Once filled, completions run at the budget bound
    C / (P + O - 1) = 100 / 50 = 2 per 2 ms step = 1,000 requests/s, measured within 2 %
    over [0.4 s, 1.8 s): after the fill-up's transient, and while prompts still wait (the
    first 900 steps, 1.8 s, are all full)."""
    n, prompt, output = 2000, 10, 41
    out = simulate(replica(), Requests(np.full(n, prompt), np.full(n, output), np.zeros(n)))
    first = out.finish_ns.min()
    assert first == 41 * 2 * MS
    assert np.count_nonzero(out.finish_ns == first) == 10
    assert out.preemptions == 0 and out.steps >= 1000
    assert out.finish_ns.max() == out.steps * MS + 100_000 * 10_000
    busy = out.pools[0].busy[0]
    assert ((busy[:, 1] - busy[:, 0])[:900] == 2 * MS).all()  # backlogged steps are full
    done = np.count_nonzero((out.finish_ns >= 400 * MS) & (out.finish_ns < 1800 * MS))
    assert abs(done / 1.4 - 1000.0) <= 20.0


def test_a_window_shorter_than_the_fill_up_reads_zero_throughput():
    """1,000 requests (P = 10, O = 41) arriving every 0.02 ms (50,000 requests/s, 50x the
    1,000 requests/s the replica sustains, see above): the last arrives at 19.98 ms. A
    request completes at its 41st step, and every step holds at least one token, so lasts
    at least 1.01 ms: nothing completes before 41 x 1.01 = 41.41 ms. The window from the
    median arrival to the last one (``saturated_throughput_rps`` of the service benchmark)
    counts zero completions; yet every request is served, the replica is never idle (a step
    lasts longer than the 0.02 ms between arrivals) and computes each of the 1,000 x 50 =
    50,000 tokens once: makespan = steps x 1 ms + 50,000 x 0.01 ms."""
    n, prompt, output = 1000, 10, 41
    arrivals_s = np.arange(n) * 2e-5
    out = simulate(replica(), Requests(np.full(n, prompt), np.full(n, output), arrivals_s))
    start, end = np.sort(out.arrival_ns)[n // 2], out.arrival_ns.max()
    assert end == 19_980_000
    assert out.finish_ns.min() >= 41 * 1_010_000 > end
    assert np.count_nonzero((out.finish_ns >= start) & (out.finish_ns <= end)) == 0
    assert (out.finish_ns > 0).all() and out.preemptions == 0
    assert out.finish_ns.max() == out.steps * MS + 50_000 * 10_000
