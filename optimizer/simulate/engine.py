"""The event loop (simpy): arrivals, routing to replica queues, each queue's engine steps,
and for a disaggregated plan the KV transfer from the prefill pool to the decode pool.

Time is integer ns. Open loop: request i arrives at its own time. Closed loop
(``concurrency`` users): the first ``concurrency`` requests arrive at 0, and each completion
releases the next request at that instant. Routing, within each pool: ``least-loaded``
sends a request to the queue with the fewest outstanding (waiting + running) requests,
lowest index on ties; ``round-robin`` deals them in turn. A request whose prompt plus output
can never fit in one queue's KV cache (a prefill queue: its prompt) is rejected on arrival
(it counts against the SLO attainment).

Disaggregated: a prompt completed on a prefill queue starts its transfer at the end of that
step; when the transfer ends (``Transfer.ns``) the prefill queue frees its slot and KV, the
first token is out (TTFT ends), and the request joins the least-loaded decode queue (a
request of one output token is done there and then).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from optimizer.inputs.service import Requests
from optimizer.simulate.deployment import BOTH, DECODE, PREFILL, Deployment
from optimizer.simulate.replica import Replica, Request, blocks

ROUTING = ("least-loaded", "round-robin")


@dataclass(frozen=True)
class PoolStats:
    """What one pool's queues did: steps, KV peak, preemptions, busy time per queue."""

    role: str
    queues: int
    steps: int
    peak_kv_fraction: float
    preemptions: int
    busy: tuple[np.ndarray, ...]  # per queue, (steps, 3) int64: start ns, end ns, requests

    def _overlap(self, start_ns: int, end_ns: int, weighted: bool) -> float:
        total = 0
        for b in self.busy:
            if len(b):
                inside = (np.minimum(b[:, 1], end_ns) - np.maximum(b[:, 0], start_ns)).clip(0)
                total += int((inside * b[:, 2]).sum() if weighted else inside.sum())
        return total / (self.queues * (end_ns - start_ns)) if end_ns > start_ns else 0.0

    def busy_fraction(self, start_ns: int, end_ns: int) -> float:
        """Share of the queues' time in [start_ns, end_ns] spent running steps."""
        return self._overlap(start_ns, end_ns, False)

    def mean_stepping(self, start_ns: int, end_ns: int) -> float:
        """Time-average per queue over [start_ns, end_ns] of the requests in its running step."""
        return self._overlap(start_ns, end_ns, True)


@dataclass(frozen=True)
class Outcome:
    """Per request (arrival order), ns; -1 where a rejected request has no time.
    ``replica``: the queue of the first pool (the only one when aggregated);
    ``decode_replica``: the decode queue (-1 when aggregated or never decoded)."""

    arrival_ns: np.ndarray
    first_token_ns: np.ndarray
    finish_ns: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    rejected: np.ndarray  # bool
    replica: np.ndarray
    preemptions: int
    peak_kv_fraction: float
    steps: int
    pools: tuple[PoolStats, ...] = ()
    decode_replica: np.ndarray | None = None
    transfer_ns: np.ndarray | None = None  # per request, -1 when none


class _Pool:
    """The queues of one deployment and its router."""

    def __init__(self, dep: Deployment, routing: str):
        self.dep = dep
        self.replicas = [Replica(dep) for _ in range(dep.replicas)]
        self.wake: list[simpy.Event | None] = [None] * dep.replicas
        self.routing = routing
        self.turn = 0

    def pick(self) -> int:
        if self.routing == "round-robin":
            k, self.turn = self.turn, (self.turn + 1) % len(self.replicas)
            return k
        return min(range(len(self.replicas)), key=lambda j: self.replicas[j].outstanding)

    def enqueue(self, k: int, req: Request) -> None:
        self.replicas[k].waiting.append(req)
        self.poke(k)

    def poke(self, k: int) -> None:
        event = self.wake[k]
        if event is not None and not event.triggered:
            event.succeed()

    def stats(self) -> PoolStats:
        reps = self.replicas
        return PoolStats(self.dep.role, len(reps), sum(len(r.busy_ns) for r in reps),
                         max(r.peak_blocks for r in reps) / self.dep.kv_blocks,
                         sum(r.preemptions for r in reps),
                         tuple(np.array(r.busy_ns, dtype=np.int64).reshape(-1, 3) for r in reps))


class _Simulation:
    def __init__(self, deps: tuple[Deployment, ...], reqs: Requests, routing: str,
                 transfer_ns: Callable[[int], int] | None):
        self.env = simpy.Environment()
        self.pools = [_Pool(dep, routing) for dep in deps]
        self.transfer_ns = transfer_ns
        n = len(reqs)
        arrival = (np.zeros(n, dtype=np.int64) if reqs.arrival_s is None
                   else np.rint(reqs.arrival_s * 1e9).astype(np.int64))
        self.requests = [Request(i, int(arrival[i]), int(reqs.prompt_tokens[i]), int(reqs.output_tokens[i]))
                         for i in range(n)]
        self.where = np.full((len(deps), n), -1, dtype=np.int64)
        self.moved = np.full(n, -1, dtype=np.int64)
        self.rejected = np.zeros(n, dtype=bool)
        self.next_closed = reqs.concurrency if reqs.arrival_s is None else None

    def _fits(self, req: Request) -> bool:
        """The request fits an empty queue of every pool it visits."""
        return all(blocks(req.prompt if p.dep.role == PREFILL else req.prompt + req.output) <= p.dep.kv_blocks
                   for p in self.pools)

    def route(self, req: Request) -> None:
        req.arrival_ns = int(self.env.now) if self.next_closed is not None else req.arrival_ns
        if not self._fits(req):
            self.rejected[req.index] = True
            self._release_next()
            return
        self._send(0, req)

    def _send(self, p: int, req: Request) -> None:
        pool = self.pools[p]
        k = pool.pick()
        self.where[p, req.index] = k
        pool.enqueue(k, req)

    def _release_next(self) -> None:
        if self.next_closed is not None and self.next_closed < len(self.requests):
            req = self.requests[self.next_closed]
            self.next_closed += 1
            self.route(req)

    def arrivals(self):
        for req in self.requests:
            if req.arrival_ns > self.env.now:
                yield self.env.timeout(req.arrival_ns - self.env.now)
            self.route(req)

    def transfer(self, k: int, req: Request):
        """KV of a prefilled request from prefill queue ``k`` to a decode queue."""
        delay = self.transfer_ns(req.prompt)
        self.moved[req.index] = delay
        yield self.env.timeout(delay)
        prefill = self.pools[0]
        prefill.replicas[k].release(req)
        prefill.poke(k)
        now = int(self.env.now)
        req.generated, req.first_token_ns = 1, now
        if req.output <= 1:
            req.finish_ns = now
            self._release_next()
        else:
            self._send(1, req)

    def serve(self, p: int, k: int):
        pool = self.pools[p]
        replica = pool.replicas[k]
        while True:
            step = replica.schedule()
            if step is None:
                pool.wake[k] = self.env.event()
                yield pool.wake[k]
                pool.wake[k] = None
                continue
            yield self.env.timeout(step.duration_ns)
            done, prefilled = replica.finish(step, int(self.env.now))
            for req in prefilled:
                self.env.process(self.transfer(k, req))
            for _ in done:
                self._release_next()

    def run(self) -> Outcome:
        if self.next_closed is None:
            self.env.process(self.arrivals())
        else:
            for req in self.requests[: self.next_closed]:
                self.route(req)
        for p, pool in enumerate(self.pools):
            for k in range(len(pool.replicas)):
                self.env.process(self.serve(p, k))
        self.env.run()
        reqs = self.requests
        unfinished = [r.index for r in reqs if r.finish_ns < 0 and not self.rejected[r.index]]
        if unfinished:  # the event queue ran dry with work left: a scheduler bug
            raise RuntimeError(f"simulation stalled with {len(unfinished)} unfinished requests")
        stats = tuple(pool.stats() for pool in self.pools)
        disagg = len(self.pools) > 1
        return Outcome(np.array([r.arrival_ns for r in reqs], dtype=np.int64),
                       np.array([r.first_token_ns for r in reqs], dtype=np.int64),
                       np.array([r.finish_ns for r in reqs], dtype=np.int64),
                       np.array([r.prompt for r in reqs], dtype=np.int64),
                       np.array([r.output for r in reqs], dtype=np.int64),
                       self.rejected, self.where[0],
                       sum(s.preemptions for s in stats), max(s.peak_kv_fraction for s in stats),
                       sum(s.steps for s in stats), stats,
                       self.where[1] if disagg else None, self.moved if disagg else None)


def simulate(dep: Deployment, reqs: Requests, routing: str = "least-loaded") -> Outcome:
    """Serve ``reqs`` on every replica queue of the aggregated deployment ``dep`` until the
    last request completes."""
    if routing not in ROUTING:
        raise ValueError(f"routing={routing!r}")
    if dep.role != BOTH:
        raise ValueError(f"an aggregated simulation needs role {BOTH!r}, not {dep.role!r}")
    return _Simulation((dep,), reqs, routing, None).run()


def simulate_disagg(prefill: Deployment, decode: Deployment, transfer_ns: Callable[[int], int],
                    reqs: Requests, routing: str = "least-loaded") -> Outcome:
    """Serve ``reqs`` on a prefill pool, a KV transfer of ``transfer_ns(prompt tokens)`` ns,
    and a decode pool, until the last request completes."""
    if routing not in ROUTING:
        raise ValueError(f"routing={routing!r}")
    if (prefill.role, decode.role) != (PREFILL, DECODE):
        raise ValueError(f"pools of roles {prefill.role!r}, {decode.role!r}")
    return _Simulation((prefill, decode), reqs, routing, transfer_ns).run()
