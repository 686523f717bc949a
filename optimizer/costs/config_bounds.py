"""Per-configuration lower bounds and a greedy warm start, in pure Python (no solver).

Used before CP-SAT to (1) drop configurations that provably cannot meet a requirement
(their lower-bound makespan exceeds a limit, or no layer split fits memory), (2) drop
configurations whose lower-bound objective exceeds that of a feasible greedy plan (they
cannot be optimal), and (3) hint CP-SAT with that greedy plan. Every bound here is valid
for every placement and split, so the filtering never removes an optimal plan.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from optimizer.costs.greedy_placement import greedy_ranks
from optimizer.costs.tables import StageCosts
from optimizer.costs.timing import batch_times, decode_step_ns, makespan_ns, objective_ns
from optimizer.costs.units import LOAD_SCALE, ceil_div


def hot_load_lower_bound(loads: tuple[int, ...], ep: int) -> int:
    """No placement of one layer on ``ep`` equal ranks has a hot rank below this: the mean,
    and the rank holding the heaviest expert plus the lightest others that fill its slots."""
    slots = len(loads) // ep
    ordered = sorted(loads)
    return max(ceil_div(LOAD_SCALE, ep), ordered[-1] + sum(ordered[: slots - 1]))


def _stage_room(c: StageCosts, j: int, cap_bytes: int) -> int:
    """Bytes left for layers on one GPU of stage j."""
    mp, p = c.memory, c.deg.pp
    return cap_bytes - (mp.activations + mp.buffers + (mp.embedding if j == 0 else 0)
                        + (mp.head if j == p - 1 else 0))


def _fits(c: StageCosts, counts: list[int], cap_bytes: int) -> bool:
    start = 0
    for j, n in enumerate(counts):
        if c.memory.stage_kv(range(start, start + n)) + sum(
                c.memory.layer_weights[start:start + n]) > _stage_room(c, j, cap_bytes):
            return False
        start += n
    return True


def layer_split_fits(c: StageCosts, num_layers: int, cap_bytes: int) -> list[int] | None:
    """Layers per stage (contiguous, non-empty) that fit ``cap_bytes`` on every GPU: the
    even split if it fits, else the split that fills each stage as far as memory allows
    (which fits whenever any split does); None when no split fits."""
    p = c.deg.pp
    base, extra = divmod(num_layers, p)
    even = [base + (1 if j < extra else 0) for j in range(p)]
    if _fits(c, even, cap_bytes):
        return even
    counts, start = [], 0
    per_layer = [w + kv for w, kv in zip(c.memory.layer_weights, c.memory.layer_kv)]
    for j in range(p):
        room, take = _stage_room(c, j, cap_bytes), 0
        most = num_layers - start - (p - j - 1)  # leave one layer for each later stage
        while take < most and (j < p - 1 or take < num_layers - start) and room >= per_layer[start + take]:
            room -= per_layer[start + take]
            take += 1
        if take == 0 or (j == p - 1 and start + take < num_layers):
            return None
        counts.append(take)
        start += take
    return counts


def stages_of(counts: list[int]) -> list[range]:
    """Contiguous layer ranges from layer counts per stage."""
    out, start = [], 0
    for n in counts:
        out.append(range(start, start + n))
        start += n
    return out


@dataclass(frozen=True)
class Bounds:
    """Lower bounds of one configuration, and whether its memory can fit at all."""

    objective_ns: int
    ttft_ns: int
    tpot_ns: int
    makespan_ns: int
    memory_fits: bool

    def timing_ns(self, requirement: str) -> int:
        """The bounded quantity a timing requirement limits."""
        return {"ttft": self.ttft_ns, "tpot": self.tpot_ns, "throughput": self.makespan_ns}[requirement]


def layer_times_ns(ph, hot: dict[int, int]) -> list[int]:
    """Per layer: its time in phase ``ph`` with MoE layers at the hot loads ``hot``, ns."""
    moe_ns = ph.moe_ns
    return [dense + (moe_ns(hot[l]) if l in hot else 0) for l, dense in enumerate(ph.layer_dense_ns)]


def min_slowest_stage_ns(ph, c: StageCosts, hot: dict[int, int], cap: int,
                         layer_ns: list[int] | None = None, counts_out: list[int] | None = None) -> int | None:
    """Smallest possible slowest-stage time of one phase over every contiguous split that
    fits memory (binary search on the time; a split is built greedily from the front,
    which finds one whenever any exists); None when no split fits memory. ``layer_ns``:
    ``layer_times_ns(ph, hot)`` when already computed; ``counts_out`` (a list) receives the
    layers per stage of a split reaching the minimum."""
    n, p = len(c.memory.layer_weights), c.deg.pp
    if layer_ns is None:
        layer_ns = layer_times_ns(ph, hot)
    # prefix sums: a stage from layer ``start`` takes the most layers whose time and memory
    # (both non-negative per layer, so monotone in the count) stay within the limit and room
    time_sum = list(accumulate(layer_ns, initial=0))
    bytes_sum = list(accumulate((w + kv for w, kv in zip(c.memory.layer_weights, c.memory.layer_kv)), initial=0))
    rooms = [_stage_room(c, j, cap) for j in range(p)]
    fixed = [(ph.embed_ns if j == 0 else 0) + (ph.head_ns if j == p - 1 else 0) for j in range(p)]

    def split(limit: int) -> list[int] | None:
        counts, start = [], 0
        for j in range(p):
            most = n - start - (p - j - 1)  # leave one layer for each later stage
            by_time = bisect_right(time_sum, time_sum[start] + limit - fixed[j]) - 1 - start
            by_bytes = bisect_right(bytes_sum, bytes_sum[start] + rooms[j]) - 1 - start
            take = min(most, by_time, by_bytes)
            if take <= 0:
                return None
            counts.append(take)
            start += take
        return counts if start == n else None

    lo, hi = max(layer_ns), sum(layer_ns) + ph.embed_ns + ph.head_ns
    if split(hi) is None:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if split(mid) is not None:
            hi = mid
        else:
            lo = mid + 1
    if counts_out is not None:
        counts_out.extend(split(lo))
    return lo


def config_bounds(c: StageCosts, hot_lb: list[int], moe_ids: list[int], cap: int) -> Bounds:
    """Bounds of configuration ``c`` with every MoE layer at its hot-load lower bound: the
    per-phase stage sum does not depend on the split, and the slowest stage is at least
    the best min-max split of that phase (each phase minimized on its own)."""
    hot = dict(zip(moe_ids, hot_lb))
    p, m = c.deg.pp, c.deg.micro_batches
    pre_ns = layer_times_ns(c.prefill, hot)
    slowest = min_slowest_stage_ns(c.prefill, c, hot, cap, pre_ns)
    if slowest is None:
        return Bounds(0, 0, 0, 0, False)
    total = sum(pre_ns) + c.prefill.embed_ns + c.prefill.head_ns  # = stage_ns of every layer
    ttft = total + (m - 1) * max(slowest, ceil_div(total, p)) + (p - 1) * c.prefill.p2p_ns
    tpot = 0
    if c.decode is not None:
        dec_ns = layer_times_ns(c.decode, hot)
        slow_dec = min_slowest_stage_ns(c.decode, c, hot, cap, dec_ns) or 0
        dec_total = sum(dec_ns) + c.decode.embed_ns + c.decode.head_ns
        tpot = max(m, p) * max(slow_dec, ceil_div(dec_total, p)) + (p - 1) * c.decode.p2p_ns
    return Bounds(objective_ns(c, ttft, tpot, len(moe_ids)), ttft, tpot, ttft + c.decode_steps * tpot, True)


def config_bounds_many(cfgs, hot_lb_of_ep: dict[int, list[int]], moe_ids: list[int], cap: int) -> list[Bounds]:
    """``[config_bounds(c, hot_lb_of_ep[c.deg.ep], moe_ids, cap) for c in cfgs]``, the same
    integers, computed with array operations: the phases of all configurations with the
    same stage count share one vectorised binary search of ``min_slowest_stage_ns``. Falls
    back to the scalar function when an intermediate product could leave int64."""
    out: list[Bounds] = []
    groups: dict[int, list[int]] = {}
    for k, c in enumerate(cfgs):
        groups.setdefault(c.deg.pp, []).append(k)
    found: dict[tuple[int, str], tuple[int, int | None]] = {}  # (k, phase) -> (layer time sum, slowest)
    for members in groups.values():
        rows = [(k, "prefill") for k in members] + [(k, "decode") for k in members if cfgs[k].decode is not None]
        times = _min_slowest_many([(cfgs[k], getattr(cfgs[k], phase)) for k, phase in rows],
                                  hot_lb_of_ep, moe_ids, cap)
        if times is not None:
            found.update(zip(rows, times))
    for k, c in enumerate(cfgs):
        if (k, "prefill") not in found:
            out.append(config_bounds(c, hot_lb_of_ep[c.deg.ep], moe_ids, cap))
            continue
        p, m = c.deg.pp, c.deg.micro_batches
        layer_sum, slowest = found[k, "prefill"]
        if slowest is None:
            out.append(Bounds(0, 0, 0, 0, False))
            continue
        total = layer_sum + c.prefill.embed_ns + c.prefill.head_ns
        ttft = total + (m - 1) * max(slowest, ceil_div(total, p)) + (p - 1) * c.prefill.p2p_ns
        tpot = 0
        if c.decode is not None:
            dec_sum, slow_dec = found[k, "decode"]
            dec_total = dec_sum + c.decode.embed_ns + c.decode.head_ns
            tpot = max(m, p) * max(slow_dec or 0, ceil_div(dec_total, p)) + (p - 1) * c.decode.p2p_ns
        out.append(Bounds(objective_ns(c, ttft, tpot, len(moe_ids)), ttft, tpot, ttft + c.decode_steps * tpot, True))
    return out


_INT64_SAFE = 1 << 61


def layer_ns_matrix(phases, hot_rows: list[list[int]], moe_ids: list[int]) -> np.ndarray | None:
    """``layer_times_ns(phases[i], dict(zip(moe_ids, hot_rows[i])))`` for every i as one int64
    array [len(phases), layers], ns (the same integer arithmetic as ``PhaseCosts.moe_ns``);
    None when an intermediate product (or a later sum of 8 phases' times) could leave int64."""
    coef_py = [[ph.moe_compute_full_ns + ph.moe_comm_full_ns, ph.moe_act_full_ns + ph.moe_comm_full_ns,
                ph.moe_weights_ns, ph.moe_latency_ns] for ph in phases]
    top_hot = max((max(row) for row in hot_rows if row), default=0)
    if max(max(max(row) for row in coef_py) * max(top_hot, 1) * 4,
           max(sum(ph.layer_dense_ns) for ph in phases) * 8) >= _INT64_SAFE:
        return None
    layer_ns = np.array([ph.layer_dense_ns for ph in phases], dtype=np.int64)
    if moe_ids:
        hot = np.array(hot_rows, dtype=np.int64).reshape(len(phases), len(moe_ids))
        coef = np.array(coef_py, dtype=np.int64)
        compute = -((-coef[:, 0:1] * hot) // LOAD_SCALE)
        memory = coef[:, 2:3] - ((-coef[:, 1:2] * hot) // LOAD_SCALE)
        layer_ns[:, moe_ids] += np.maximum(compute, memory) + coef[:, 3:4]
    return layer_ns


def _min_slowest_many(rows, hot_lb_of_ep, moe_ids: list[int], cap: int) -> list[tuple[int, int | None]] | None:
    """For (configuration, phase) pairs of one stage count: (sum of the layer times,
    ``min_slowest_stage_ns`` or None) per pair, as Python ints; None when int64 could
    overflow. The binary search starts from a tighter bracket than the scalar one
    (the mean stage time below; one greedy try above): the greedy split's success is
    monotone in the limit, so the least limit it meets is the same."""
    group = [c for c, _ in rows]
    phases = [ph for _, ph in rows]
    count, n, p = len(rows), len(group[0].memory.layer_weights), group[0].deg.pp
    fixed_py = [[(ph.embed_ns if j == 0 else 0) + (ph.head_ns if j == p - 1 else 0) for j in range(p)]
                for ph in phases]
    bytes_py = [[w + kv for w, kv in zip(c.memory.layer_weights, c.memory.layer_kv)] for c in group]
    rooms_py = [[_stage_room(c, j, cap) for j in range(p)] for c in group]
    if max(max(x for row in fixed_py for x in row) * 8,
           (max(sum(row) for row in bytes_py) + max(abs(r) for row in rooms_py for r in row)) * 4) >= _INT64_SAFE:
        return None
    layer_ns = layer_ns_matrix(phases, [hot_lb_of_ep[c.deg.ep] for c in group], moe_ids)
    if layer_ns is None:
        return None
    zeros = np.zeros((count, 1), dtype=np.int64)
    time_sum = np.concatenate([zeros, np.cumsum(layer_ns, axis=1)], axis=1)
    bytes_sum = np.concatenate([zeros, np.cumsum(np.array(bytes_py, dtype=np.int64), axis=1)], axis=1)
    rooms, fixed = np.array(rooms_py, dtype=np.int64), np.array(fixed_py, dtype=np.int64)
    index = np.arange(count)

    def split_ok(limit: np.ndarray) -> np.ndarray:
        """Whether the front-greedy split of ``min_slowest_stage_ns`` succeeds at ``limit``."""
        start = np.zeros(count, dtype=np.int64)
        ok = np.ones(count, dtype=bool)
        for j in range(p):
            most = n - start - (p - j - 1)
            by_time = (time_sum <= (time_sum[index, start] + limit - fixed[:, j])[:, None]).sum(axis=1) - 1 - start
            by_bytes = (bytes_sum <= (bytes_sum[index, start] + rooms[:, j])[:, None]).sum(axis=1) - 1 - start
            take = np.minimum(np.minimum(most, by_time), by_bytes)
            ok &= take > 0
            start = np.minimum(start + np.maximum(take, 0), n)
        return ok & (start == n)

    totals = time_sum[:, -1]
    everything = totals + fixed.sum(axis=1)  # every stage's time added up
    hi = everything.copy()
    fits = split_ok(hi)
    widest = layer_ns.max(axis=1)
    lo = np.maximum(widest, -(-everything // p))  # the slowest stage is at least the mean one
    guess = np.minimum(lo + widest + fixed.max(axis=1), hi)
    hi = np.where(fits & split_ok(guess), guess, hi)
    lo = np.minimum(lo, hi)
    active = fits & (lo < hi)
    while active.any():
        mid = (lo + hi) // 2
        ok = split_ok(mid)
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid + 1, lo)
        active = fits & (lo < hi)
    return [(int(t), int(x) if f else None) for t, x, f in zip(totals, lo, fits)]


@dataclass(frozen=True)
class GreedyPlan:
    """A feasible plan built without the solver (warm start and objective cutoff)."""

    index: int
    counts: list[int]
    placement: dict[int, list[list[list[int]]]]  # ep -> [MoE layer][rank] expert ids
    objective_ns: int
    makespan_ns: int


def _meets(limits_ns: dict[str, int], ttft: int, tpot: int, total: int) -> bool:
    values = {"ttft": ttft, "tpot": tpot, "throughput": total}
    return all(values[r] <= v for r, v in limits_ns.items())


def _min_max_splits(c: StageCosts, hot: dict[int, int], cap: int, tried: list[list[int]]) -> list[list[int]]:
    """The min-max layer splits of prefill and of decode (``min_slowest_stage_ns``) not
    in ``tried``: with several stages, often far better than the even split."""
    out: list[list[int]] = []
    for ph in (c.prefill, c.decode):
        if ph is not None:
            counts: list[int] = []
            if min_slowest_stage_ns(ph, c, hot, cap, counts_out=counts) is not None and counts not in tried + out:
                out.append(counts)
    return out


def _prefix_sums(cfgs: list[StageCosts], hot_of: dict[int, dict[int, int]], moe_ids: list[int]) -> dict[int, list]:
    """Per configuration index: per phase (prefill, then decode), the prefix sums of its
    layer times at the hot loads ``hot_of[ep]``, as Python ints; {} when int64 could overflow."""
    phases = [ph for c in cfgs for ph in _phases(c)]
    if not phases:
        return {}
    matrix = layer_ns_matrix(phases, [[hot_of[c.deg.ep][l] for l in moe_ids] for c in cfgs for _ in _phases(c)],
                             moe_ids)
    if matrix is None:
        return {}
    rows = np.concatenate([np.zeros((len(phases), 1), dtype=np.int64), np.cumsum(matrix, axis=1)], axis=1).tolist()
    out, i = {}, 0
    for k, c in enumerate(cfgs):
        out[k] = rows[i:i + len(_phases(c))]
        i += len(_phases(c))
    return out


def _phases(c: StageCosts) -> list:
    """The phase costs of ``c``: prefill, then decode when it decodes."""
    return [c.prefill] if c.decode is None else [c.prefill, c.decode]


def _split_times(c: StageCosts, counts: list[int], sums: list[list[int]]) -> tuple[int, int, int]:
    """(TTFT, TPOT, batch makespan) of the split ``counts`` from the layer-time prefix sums
    ``sums`` of each phase (``timing.batch_times`` without recomputing the layer times), ns."""
    p, m = len(counts), c.deg.micro_batches
    ends = list(accumulate(counts, initial=0))

    def stage_times(ph, prefix: list[int]) -> list[int]:
        return [prefix[ends[j + 1]] - prefix[ends[j]] + (ph.embed_ns if j == 0 else 0)
                + (ph.head_ns if j == p - 1 else 0) for j in range(p)]

    ttft = makespan_ns(stage_times(c.prefill, sums[0]), m, c.prefill.p2p_ns)
    tpot = decode_step_ns(stage_times(c.decode, sums[1]), m, c.decode.p2p_ns) if c.decode is not None else 0
    return ttft, tpot, ttft + c.decode_steps * tpot


def greedy_plan(cfgs: list[StageCosts], loads, moe_ids: list[int], limits_ns: dict[str, int],
                cap: int, goal: str = "objective", placements: dict | None = None,
                lower: list[int] | None = None) -> GreedyPlan | None:
    """The best plan, by (objective, makespan) or by (makespan, objective) for ``goal`` =
    "makespan", over all configurations with greedy placement, each with the split of
    ``layer_split_fits`` and, with several stages, the min-max splits (``_min_max_splits``;
    only where ``lower``, a lower bound on the goal per configuration, leaves room to beat
    the best plan of the first pass); ties go to the earlier configuration and split. None
    when none meets every requirement. ``placements`` may give better placements per EP
    degree than the greedy rule."""
    placements = dict(placements or {})
    hot_of: dict[int, dict[int, int]] = {}  # ep -> MoE layer -> hot load (once per EP degree)
    best = None  # ((goal key), k, split index), counts

    sums: dict[int, list] = {}  # k -> per phase: prefix sums of its layer times, ns

    def consider(k: int, c: StageCosts, j: int, counts: list[int]) -> None:
        nonlocal best
        ttft, tpot, span = _split_times(c, counts, sums[k]) if k in sums else \
            batch_times(c, stages_of(counts), hot_of[c.deg.ep])[1:]
        if not _meets(limits_ns, ttft, tpot, span):
            return
        lost = objective_ns(c, ttft, tpot, len(moe_ids))
        rank = ((lost, span) if goal == "objective" else (span, lost), k, j)
        if best is None or rank < best[0]:
            best = (rank, counts)

    first: dict[int, list[int]] = {}
    for ep in sorted({c.deg.ep for c in cfgs}):
        if ep not in placements:
            placements[ep] = [greedy_ranks(row, ep) for row in loads]
        hot_of[ep] = dict(zip(moe_ids, (max(sum(row[x] for x in r) for r in ranks)
                                        for row, ranks in zip(loads, placements[ep]))))
    sums.update(_prefix_sums(cfgs, hot_of, moe_ids))
    for k, c in enumerate(cfgs):
        counts = layer_split_fits(c, len(c.memory.layer_weights), cap)
        if counts is not None:
            first[k] = counts
            consider(k, c, 0, counts)
    for k, counts in first.items():
        c = cfgs[k]
        if c.deg.pp > 1 and (best is None or lower is None or lower[k] <= best[0][0][0]):
            for j, other in enumerate(_min_max_splits(c, hot_of[c.deg.ep], cap, [counts]), start=1):
                consider(k, c, j, other)
    if best is None:
        return None
    (key, k, _), counts = best
    obj, span = key if goal == "objective" else key[::-1]
    return GreedyPlan(k, counts, placements, obj, span)
