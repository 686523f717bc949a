"""The event loop (simpy): arrivals, routing to replicas, and each replica's engine steps.

Time is integer ns. Open loop: request i arrives at its own time. Closed loop
(``concurrency`` users): the first ``concurrency`` requests arrive at 0, and each completion
releases the next request at that instant. Routing: ``least-loaded`` sends a request to the
replica with the fewest outstanding (waiting + running) requests, lowest index on ties;
``round-robin`` deals them in turn. A request whose prompt plus output can never fit in one
replica's KV cache is rejected on arrival (it counts against the SLO attainment).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from optimizer.inputs.service import Requests
from optimizer.simulate.deployment import Deployment
from optimizer.simulate.replica import Replica, Request, blocks

ROUTING = ("least-loaded", "round-robin")


@dataclass(frozen=True)
class Outcome:
    """Per request (arrival order), ns; -1 where a rejected request has no time."""

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


class _Simulation:
    def __init__(self, dep: Deployment, reqs: Requests, routing: str):
        self.env = simpy.Environment()
        self.dep = dep
        self.replicas = [Replica(dep) for _ in range(dep.replicas)]
        self.wake: list[simpy.Event | None] = [None] * dep.replicas
        self.routing = routing
        self.turn = 0
        self.steps = 0
        n = len(reqs)
        arrival = (np.zeros(n, dtype=np.int64) if reqs.arrival_s is None
                   else np.rint(reqs.arrival_s * 1e9).astype(np.int64))
        self.requests = [Request(i, int(arrival[i]), int(reqs.prompt_tokens[i]), int(reqs.output_tokens[i]))
                         for i in range(n)]
        self.where = np.full(n, -1, dtype=np.int64)
        self.rejected = np.zeros(n, dtype=bool)
        self.next_closed = reqs.concurrency if reqs.arrival_s is None else None

    def route(self, req: Request) -> None:
        req.arrival_ns = int(self.env.now) if self.next_closed is not None else req.arrival_ns
        if blocks(req.prompt + req.output) > self.dep.kv_blocks:
            self.rejected[req.index] = True
            self._release_next()
            return
        if self.routing == "round-robin":
            k, self.turn = self.turn, (self.turn + 1) % len(self.replicas)
        else:
            k = min(range(len(self.replicas)), key=lambda j: self.replicas[j].outstanding)
        self.where[req.index] = k
        self.replicas[k].waiting.append(req)
        event = self.wake[k]
        if event is not None and not event.triggered:
            event.succeed()

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

    def serve(self, k: int):
        replica = self.replicas[k]
        while True:
            step = replica.schedule()
            if step is None:
                self.wake[k] = self.env.event()
                yield self.wake[k]
                self.wake[k] = None
                continue
            self.steps += 1
            yield self.env.timeout(step.duration_ns)
            for _ in replica.finish(step, int(self.env.now)):
                self._release_next()

    def run(self) -> Outcome:
        if self.next_closed is None:
            self.env.process(self.arrivals())
        else:
            for req in self.requests[: self.next_closed]:
                self.route(req)
        for k in range(len(self.replicas)):
            self.env.process(self.serve(k))
        self.env.run()
        reqs = self.requests
        unfinished = [r.index for r in reqs if r.finish_ns < 0 and not self.rejected[r.index]]
        if unfinished:  # the event queue ran dry with work left: a scheduler bug
            raise RuntimeError(f"simulation stalled with {len(unfinished)} unfinished requests")
        return Outcome(np.array([r.arrival_ns for r in reqs], dtype=np.int64),
                       np.array([r.first_token_ns for r in reqs], dtype=np.int64),
                       np.array([r.finish_ns for r in reqs], dtype=np.int64),
                       np.array([r.prompt for r in reqs], dtype=np.int64),
                       np.array([r.output for r in reqs], dtype=np.int64),
                       self.rejected, self.where,
                       sum(r.preemptions for r in self.replicas),
                       max(r.peak_blocks for r in self.replicas) / self.dep.kv_blocks,
                       self.steps)


def simulate(dep: Deployment, reqs: Requests, routing: str = "least-loaded") -> Outcome:
    """Serve ``reqs`` on every replica of ``dep`` until the last request completes."""
    if routing not in ROUTING:
        raise ValueError(f"routing={routing!r}")
    return _Simulation(dep, reqs, routing).run()
