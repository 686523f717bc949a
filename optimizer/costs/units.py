"""The only place where floats become the integers CP-SAT works with.

Scales (one per quantity):
- time: integer nanoseconds (``NS_PER_S``); costs are rounded *up*, so a plan the
  integer model accepts is never worse than the float figures it prints;
- memory: integer bytes, rounded up;
- expert load: each MoE layer's routed tokens as integer parts per ``LOAD_SCALE``
  (largest-remainder rounding, so a layer's parts sum to exactly ``LOAD_SCALE``).

Requirement targets are rounded *down* (an upper limit of 10 s becomes at most 1e10 ns).
"""

from __future__ import annotations

import math
from fractions import Fraction

NS_PER_S = 10**9
NS_PER_MS = 10**6
BYTES_PER_GB = 10**9
LOAD_SCALE = 1_000_000


def ceil_int(value: float) -> int:
    """Smallest integer >= value, robust to float noise just above an integer."""
    rounded = round(value)
    if abs(value - rounded) <= 1e-9 * max(1.0, abs(value)):
        return int(rounded)
    return math.ceil(value)


def floor_int(value: float) -> int:
    """Largest integer <= value, robust to float noise just below an integer."""
    rounded = round(value)
    if abs(value - rounded) <= 1e-9 * max(1.0, abs(value)):
        return int(rounded)
    return math.floor(value)


def seconds_to_ns(seconds: float) -> int:
    """A cost in seconds as integer ns, rounded up."""
    return ceil_int(seconds * NS_PER_S)


def limit_s_to_ns(seconds: float, strict: bool = False) -> int:
    """An upper limit in seconds as integer ns, rounded down; a strict '<' limit excludes
    the limit itself. The limit is the decimal the user wrote (0.3 means 3/10, not the
    binary float just below it), so TTFT < 0.3 s allows at most 299,999,999 ns."""
    exact = Fraction(repr(float(seconds))) * NS_PER_S
    ns = exact.numerator // exact.denominator
    return ns - 1 if strict and exact == ns else ns


def gb_to_bytes_floor(gb: float) -> int:
    """A capacity in GB as integer bytes, rounded down."""
    return floor_int(gb * BYTES_PER_GB)


def ceil_div(numerator: int, denominator: int) -> int:
    """Exact ceil(numerator / denominator) for integers, denominator > 0."""
    return -((-numerator) // denominator)


def ns_to_s(ns: int) -> float:
    return ns / NS_PER_S


def ns_to_ms(ns: int) -> float:
    return ns / NS_PER_MS


def bytes_to_gb(num_bytes: int) -> float:
    return num_bytes / BYTES_PER_GB


# Service rates: requests/s as integer micro-requests/s, tokens/s as integer milli-tokens/s
# (rounded down: a plan never claims more than its float figures).
RATE_SCALE = 10**6
TOKEN_RATE_SCALE = 10**3


def rate_to_int(rps: float) -> int:
    """A request rate as integer micro-requests/s, rounded down."""
    return floor_int(rps * RATE_SCALE)


def token_rate_to_int(tokens_per_s: float) -> int:
    """A token rate as integer milli-tokens/s, rounded down."""
    return floor_int(tokens_per_s * TOKEN_RATE_SCALE)


def rate_target_to_int(rps: float) -> int:
    """A lower limit on a request rate as integer micro-requests/s, rounded up."""
    return ceil_int(rps * RATE_SCALE)
