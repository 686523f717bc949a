"""Serving knob tuples: the candidate lists by hand, the admissible set by enumeration."""

import itertools

from optimizer.costs.serving.knobs import (
    CHUNK_TOKENS,
    MAX_RUNNING_CAP,
    ReplicaMemory,
    ServingKnobs,
    admissible_knobs,
    largest_running_cap,
    micro_batch_counts,
    prefill_micro_batches,
    running_caps,
)


def test_running_caps_by_hand():
    assert running_caps(20) == [1, 2, 3, 4, 6, 8, 12, 16]
    assert running_caps(24) == [1, 2, 3, 4, 6, 8, 12, 16, 24]
    assert running_caps(1) == [1]
    assert running_caps(0) == []


def test_micro_batch_counts_by_hand():
    assert micro_batch_counts(1, 32) == [1]
    assert micro_batch_counts(2, 32) == [1, 2]
    assert micro_batch_counts(8, 32) == [1, 8]
    assert micro_batch_counts(4, 3) == [1]
    assert (prefill_micro_batches(1, 32), prefill_micro_batches(8, 32), prefill_micro_batches(8, 4)) == (1, 8, 4)


# 2 B of KV per context token, requests of 800 + 200 tokens: 2,000 B of KV each
MEM = ReplicaMemory(fixed_bytes=60_000, kv_bytes_per_request=2_000, activation_bytes_per_token=10,
                    capacity_bytes=200_000)


def test_largest_running_cap_by_hand():
    # each request 2,000 B of KV; C = 512 leaves
    # 200,000 - 60,000 - 5,120 = 134,880 B: floor(134,880 / 2,000) = 67 requests
    assert largest_running_cap(MEM, 512) == 67
    assert MEM.peak_bytes(67, 512) <= MEM.capacity_bytes < MEM.peak_bytes(68, 512)
    # C = 16,384 leaves 200,000 - 60,000 - 163,840 < 0: nothing fits
    assert largest_running_cap(MEM, 16384) == 0


def test_admissible_knobs_equal_enumeration():
    pp = 2
    got = set(admissible_knobs(MEM, pp, max_micro_batches=32))
    want = set()
    for cap, chunk, m_p, m_d in itertools.product(range(1, 200), CHUNK_TOKENS, range(1, 9), range(1, 9)):
        peak = 60_000 + 10 * chunk + 2_000 * cap
        is_cap = cap & (cap - 1) == 0 or (cap % 3 == 0 and (cap // 3) & (cap // 3 - 1) == 0)
        if (peak <= 200_000 and is_cap and m_p == pp and m_d in (1, pp) and m_d <= cap
                and cap <= chunk and cap <= MAX_RUNNING_CAP):
            want.add(ServingKnobs(cap, chunk, m_p, m_d))
    assert got == want
    # B = 64 at C = 512: 60,000 + 5,120 + 128,000 = 193,120 B fits; the next cap,
    # 96: 60,000 + 5,120 + 192,000 = 257,120 B does not
    assert max(k.max_running_requests for k in got) == 64
    # C = 16,384 alone needs 60,000 + 163,840 > 200,000 B
    assert {k.prefill_chunk_tokens for k in got} == {512, 1024, 2048, 4096, 8192}
