"""The pool models of disaggregated serving (optimizer/costs/serving/disagg*.py) against
figures computed by hand with test-double step times, the KV transfer by hand, and the
rate bounds ``moeopt size`` relies on against the goodputs they bound."""

from __future__ import annotations

import math
import random

import pytest

from optimizer.costs.serving.disagg import (
    INTER_NODE,
    INTRA_NODE,
    kv_transfer_bytes,
    min_replicas,
    transfer_seconds,
    undominated,
)
from optimizer.costs.serving.disagg_decode import (
    DecodeQueue,
    decode_capacity_rps,
    decode_goodput_rps,
    decode_rate_bound,
    predict_decode,
    steady_running,
    z_of,
)
from optimizer.inputs.schema import Instance
from tests.oracles.tiny_service import TINY

A_NS, B_NS = 10_000_000, 100_000  # step(n) = 10 ms + 0.1 ms per decode


def affine(decodes: int) -> int:
    return A_NS + B_NS * decodes


def test_one_queue_steady_state_by_hand():
    # k = 1: a decoding request's step holds itself and the n others, so TPOT = a + b (1 + n)
    # and n = lambda (D - 1) TPOT  =>  n = lambda (D-1) (a + b) / (1 - lambda (D-1) b).
    dq = DecodeQueue(affine, queues=1, output_tokens=101, cap=10_000)
    rate = 20.0  # lambda (D - 1) = 2000 per s; a + b = 0.0101 s; b = 1e-4 s
    n = 2000 * 0.0101 / (1 - 2000 * 1e-4)  # = 25.25
    assert steady_running(dq, rate) == pytest.approx(n, rel=1e-7)
    m = predict_decode(dq, rate)
    assert m.tpot_mean_ms == pytest.approx((0.010 + 1e-4 * (1 + n)) * 1e3, rel=1e-7)
    # p90: the others seen over a life at n + z sqrt(2 n / 3), itself included
    seen = 1 + n + z_of(90) * math.sqrt(2 * n / 3)
    assert m.tpot_p90_ms == pytest.approx((0.010 + 1e-4 * seen) * 1e3, rel=1e-7)
    # a slot at p90: n + z sqrt(n) + 1 <= B
    assert m.admitted_at[90]
    assert m.utilization == pytest.approx(n / 10_000, rel=1e-7)


def test_decode_goodput_is_where_the_slo_binds():
    # TPOT p90 = a + b (1 + n + z sqrt(2n/3)) <= 15 ms  <=>  n + z sqrt(2n/3) <= 49
    dq = DecodeQueue(affine, queues=1, output_tokens=101, cap=10_000)
    z = z_of(90)
    root = (-z * math.sqrt(2 / 3) + math.sqrt(2 / 3 * z * z + 4 * 49)) / 2  # sqrt(n)
    n = root * root
    rate = n / (100 * (0.010 + 1e-4 * (1 + n)))  # Little's law at that n
    assert decode_goodput_rps(dq, 15.0, 90) == pytest.approx(rate, rel=1e-6)
    # without an SLO the cap binds: n < B = 60 (capacity), the slot rule n + z sqrt(n) + 1 <= 60
    capped = DecodeQueue(affine, queues=1, output_tokens=101, cap=60)
    assert decode_capacity_rps(capped) == pytest.approx(60 / (100 * (0.010 + 1e-4 * 61)), rel=1e-6)
    root = (-z + math.sqrt(z * z + 4 * 59)) / 2
    n = root * root
    assert decode_goodput_rps(capped, None, 90) == pytest.approx(n / (100 * (0.010 + 1e-4 * (1 + n))), rel=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_decode_rate_bound_bounds_the_goodput(seed):
    rnd = random.Random(seed)
    a, b, c = rnd.uniform(1e6, 3e7), rnd.uniform(1e3, 5e5), rnd.uniform(0, 2e3)

    def step(n: int) -> int:  # increasing, convex or not
        return int(a + b * n + c * n * math.sqrt(n))
    k, d, cap = rnd.choice([1, 2, 4, 8]), rnd.randint(2, 2000), rnd.choice([8, 64, 256, 1024])
    slo = rnd.choice([None, step(1) * 1e-6 * rnd.uniform(1.0, 4.0)])
    dq = DecodeQueue(step, k, d, cap)
    good = decode_goodput_rps(dq, slo, 90)
    assert good <= decode_rate_bound(step, k, d, cap, slo) * (1 + 1e-9)
    assert good <= decode_capacity_rps(dq) * (1 + 1e-9)


def test_kv_transfer_by_hand():
    inst = Instance.model_validate(TINY)
    # 4 layers x 2000 tokens x (K and V: 2 x 8 heads x 128 x 2 bytes = 4096 B)
    assert kv_transfer_bytes(inst, 2000) == 4 * 2000 * 4096
    # intra: 32.768 MB over 2 links of 100 GB/s + 5 us; inter: over 4 links of 25 GB/s + 10 us
    assert transfer_seconds(inst, 32_768_000, 2, INTRA_NODE) == pytest.approx(32.768e6 / 200e9 + 5e-6, rel=1e-12)
    assert transfer_seconds(inst, 32_768_000, 4, INTER_NODE) == pytest.approx(32.768e6 / 100e9 + 10e-6, rel=1e-12)


def test_min_replicas_is_the_fewest_meeting_the_rate():
    # a replica serves up to 3.5 requests/s: 10 requests/s need ceil(10 / 3.5) = 3
    assert min_replicas(lambda r: r <= 3.5, 10.0, 3.5) == 3
    assert min_replicas(lambda r: r <= 3.5, 10.0, 3.4999999) == 3  # bisection's tolerance
    assert min_replicas(lambda r: r <= 3.5, 7.0, 3.5) == 2
    assert min_replicas(lambda r: False, 7.0, 0.0) is None
    assert min_replicas(lambda r: True, None, 1.0) == 0


def test_undominated_keeps_the_front_per_group():
    items = [("g8", 5, 5), ("g8", 4, 6), ("g8", 4, 4), ("g8", 5, 5), ("g16", 1, 1)]
    kept = undominated(items, lambda c: (c[0], (c[1], c[2])))
    assert sorted(kept) == [("g16", 1, 1), ("g8", 4, 6), ("g8", 5, 5)]
