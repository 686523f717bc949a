"""One replica queue's continuous-batching scheduler, as vLLM (v1) and SGLang run it, in one
of three roles: ``both`` (an aggregated replica: prefills and decodes), ``prefill`` (a
disaggregated prefill replica: prompts only) and ``decode`` (a disaggregated decode replica:
requests arrive prefilled with their KV cache). The aggregated replica is the general case;
the two disaggregated roles switch parts of it off.

Each engine step:
1. decode first (not in a prefill replica): every running request whose prompt is done
   feeds its last token (one KV slot more); when a KV block is missing, the newest running
   request is preempted (its blocks freed, back to the head of the queue, recomputed later:
   its prompt and the tokens it generated are prefilled again) until the older ones fit;
2. the rest of the step's token budget (``prefill_chunk_tokens`` minus the decode tokens)
   goes to prompt chunks: first requests already part-way through their prompt, oldest
   first, then new requests admitted from the FCFS queue while the running count is below
   ``max_running_requests`` and the chunk's KV blocks are free (no preemption to admit; no
   admission at all in a step that preempted, as vLLM v1).
   A decode replica admits a transferred request the same way: its cache (the prompt's
   tokens) and the slot of its first decode must fit, and it decodes in this step;
3. a chunk that completes its prompt yields the request's next token (its first one unless
   it was preempted); a request leaves when it has all its output tokens. In a prefill
   replica a completed prompt instead starts its KV transfer: the request keeps its slot and
   its KV until ``release`` (the transfer's end).
KV is held in blocks of ``KV_BLOCK_TOKENS`` tokens, allocated as tokens arrive.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from optimizer.costs.step_time import StepBatch
from optimizer.simulate.deployment import BOTH, DECODE, KV_BLOCK_TOKENS, PREFILL, Deployment


@dataclass(eq=False)
class Request:
    """One request's progress. ``target``: tokens to prefill (the prompt, or prompt plus
    generated tokens after a preemption); ``done`` of them computed; ``kv`` tokens cached on
    the replica that holds it (a transferred request arrives at a decode replica with
    ``done == target`` and ``kv == 0``: its cache is allocated on admission)."""

    index: int
    arrival_ns: int
    prompt: int
    output: int
    target: int = 0
    done: int = 0
    kv: int = 0
    generated: int = 0
    first_token_ns: int = -1
    finish_ns: int = -1
    preemptions: int = 0
    prefilled_ns: int = -1   # disaggregated: end of the prefill step that completed the prompt

    def __post_init__(self):
        self.target = self.prompt

    @property
    def decoding(self) -> bool:
        return self.done == self.target


def blocks(tokens: int) -> int:
    return -(-tokens // KV_BLOCK_TOKENS)


@dataclass
class Step:
    """What one step runs: (request, chunk tokens) and decoding requests; its duration."""

    chunks: list[tuple[Request, int]]
    decodes: list[Request]
    duration_ns: int


@dataclass
class Replica:
    """Queue, running set and KV blocks of one replica queue (an attention-DP rank)."""

    dep: Deployment
    waiting: deque = field(default_factory=deque)
    running: list = field(default_factory=list)  # admission order, oldest first
    used_blocks: int = 0
    peak_blocks: int = 0
    preemptions: int = 0
    busy_ns: list = field(default_factory=list)  # (start, end, requests) of every step

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    @property
    def role(self) -> str:
        return self.dep.role

    def _preempt_newest(self) -> Request:
        victim = self.running.pop()
        self.used_blocks -= blocks(victim.kv)
        victim.target, victim.done, victim.kv = victim.prompt + victim.generated, 0, 0
        victim.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(victim)
        return victim

    def _grow(self, req: Request, new_tokens: int) -> bool:
        """Allocate the blocks ``req`` needs for ``new_tokens`` more cached tokens."""
        need = blocks(req.kv + new_tokens) - blocks(req.kv)
        if self.used_blocks + need > self.dep.kv_blocks:
            return False
        self.used_blocks += need
        req.kv += new_tokens
        return True

    def _sending(self, req: Request) -> bool:
        """A prefill replica's request whose prompt is done: its KV is being transferred."""
        return self.role == PREFILL and req.decoding

    def schedule(self) -> Step | None:
        """Choose the next step (KV allocated for it); None when there is nothing to run."""
        knobs = self.dep.knobs
        decodes = [] if self.role == PREFILL else [req for req in self.running if req.decoding]
        need = sum(1 for req in decodes if req.kv % KV_BLOCK_TOKENS == 0)
        preempted = False
        if self.used_blocks + need <= self.dep.kv_blocks:  # the usual case: every decode fits
            self.used_blocks += need
            for req in decodes:
                req.kv += 1
        else:
            decodes = self._decodes_with_preemption()
            preempted = True  # at least one: the decodes' blocks did not all fit
        budget = knobs.prefill_chunk_tokens - len(decodes)
        chunks: list[tuple[Request, int]] = []
        for req in self.running:
            if budget <= 0:
                break
            if not req.decoding:
                size = min(req.target - req.done, budget, self._fitting_tokens(req))
                if size > 0:
                    self._grow(req, size)
                    chunks.append((req, size))
                    budget -= size
        # vLLM v1 admits no waiting request in a step that preempted (the victim would be
        # readmitted into the blocks just freed for the older requests)
        while not preempted and budget > 0 and self.waiting and len(self.running) < knobs.max_running_requests:
            req = self.waiting[0]
            if req.decoding:  # a transferred request (decode replica): its cache, then a decode
                if not self._grow(req, req.target + 1):
                    break
                decodes.append(req)
                size = 1
            else:
                size = min(req.target, budget)
                if not self._grow(req, size):
                    break  # refuse to admit: wait for KV to free up
                chunks.append((req, size))
            self.waiting.popleft()
            self.running.append(req)
            budget -= size
        if not chunks and not decodes:
            if preempted:  # every decode was preempted: an empty step, then admit
                return self.schedule()
            if self.running and not any(self._sending(r) for r in self.running):
                self._preempt_newest()  # part-way prompts hold all the KV: free the newest
                return self.schedule()
            return None  # idle, or waiting for transfers to free KV and slots
        self.peak_blocks = max(self.peak_blocks, self.used_blocks)
        return Step(chunks, decodes, self._duration(chunks, decodes))

    def _decodes_with_preemption(self) -> list[Request]:
        """Give each decoding request, oldest first, its next KV slot, preempting the
        newest running request while a block is missing."""
        decodes: list[Request] = []
        preempted: set[int] = set()
        for req in list(self.running):
            if req.index in preempted or not req.decoding:
                continue
            while not self._grow(req, 1):
                preempted.add(self._preempt_newest().index)
                if req.index in preempted:
                    break
            else:
                decodes.append(req)
        return decodes

    def _fitting_tokens(self, req: Request) -> int:
        free = (self.dep.kv_blocks - self.used_blocks) * KV_BLOCK_TOKENS
        return free + (blocks(req.kv) * KV_BLOCK_TOKENS - req.kv)

    def _duration(self, chunks, decodes) -> int:
        """Step time of the largest micro-batch (requests dealt round-robin)."""
        knobs = self.dep.knobs
        m = min(knobs.decode_micro_batches if decodes else knobs.prefill_micro_batches,
                len(chunks) + len(decodes))
        if m > 1:  # deal chunks then decodes round-robin; micro-batch 0 is the largest
            mine = (chunks + decodes)[0::m]
            chunks = [item for item in mine if isinstance(item, tuple)]
            decodes = [item for item in mine if not isinstance(item, tuple)]
        batch: StepBatch = self.dep.timer.batch(
            [(r.kv - n, n, r.kv == r.target) for r, n in chunks], [r.kv for r in decodes])
        return self.dep.timer.ns(batch, m)

    def finish(self, step: Step, now_ns: int) -> tuple[list[Request], list[Request]]:
        """Apply a step that ended at ``now_ns``: (requests that completed, requests whose
        prompt a prefill replica completed, to transfer)."""
        done: list[Request] = []
        prefilled: list[Request] = []
        self.busy_ns.append((now_ns - step.duration_ns, now_ns, len(step.chunks) + len(step.decodes)))
        for req, size in step.chunks:
            req.done += size
            if req.decoding:
                if self.role == PREFILL:
                    req.prefilled_ns = now_ns
                    prefilled.append(req)
                else:
                    self._emit(req, now_ns, done)
        for req in step.decodes:
            self._emit(req, now_ns, done)
        for req in done:
            self.running.remove(req)
            self.used_blocks -= blocks(req.kv)
        return done, prefilled

    def release(self, req: Request) -> None:
        """A prefill replica's request whose KV transfer ended: its slot and KV are free."""
        self.running.remove(req)
        self.used_blocks -= blocks(req.kv)
        req.kv = 0

    @staticmethod
    def _emit(req: Request, now_ns: int, done: list) -> None:
        req.generated += 1
        if req.first_token_ns < 0:
            req.first_token_ns = now_ns
        if req.generated >= req.output:
            req.finish_ns = now_ns
            done.append(req)


__all__ = ["BOTH", "DECODE", "PREFILL", "Replica", "Request", "Step", "blocks"]
