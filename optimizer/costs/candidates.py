"""Admissible parallel configurations, enumerated in pure Python (no solver).

A configuration fixes every degree and the micro-batch count. CP-SAT then selects one of
them (a one-hot choice), so no product of degrees is ever a constraint.
"""

from __future__ import annotations

from optimizer.costs.layout import Degrees
from optimizer.costs.tables import seqs_per_replica
from optimizer.inputs.schema import Instance


def divisors(n: int) -> list[int]:
    """Positive divisors of n in increasing order."""
    small = [d for d in range(1, int(n**0.5) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def tp_admissible(inst: Instance, tp: int) -> bool:
    """TP splits the query heads evenly, KV heads split or replicate evenly, and a TP group
    stays inside one node."""
    m, gpn = inst.model, inst.hardware.gpus_per_node
    kv_ok = m.num_kv_heads % tp == 0 or tp % m.num_kv_heads == 0
    return m.num_attention_heads % tp == 0 and kv_ok and tp <= gpn and gpn % tp == 0


def micro_batch_counts(inst: Instance, dp: int) -> list[int]:
    """Micro-batch counts that split a replica's sequences evenly."""
    seqs = seqs_per_replica(inst, dp)
    allowed = inst.workload.micro_batches
    return [m for m in divisors(seqs) if m <= inst.search.max_micro_batches
            and (allowed is None or m in allowed)]


def admissible_degrees(inst: Instance, num_gpus: int) -> list[Degrees]:
    """Every (tp, pp, dp, ep, etp, edp, micro_batches) that uses exactly ``num_gpus`` GPUs.

    Rules: tp admissible (see ``tp_admissible``); pp <= layers; dp <= sequences;
    ep divides the experts; etp divides tp (the expert slices stay in the TP group's node)
    and the expert FFN width; etp * ep divides the GPUs of a stage (parallel folding).
    """
    m = inst.model
    out: list[Degrees] = []
    for tp in divisors(num_gpus):
        if not tp_admissible(inst, tp):
            continue
        for pp in divisors(num_gpus // tp):
            dp = num_gpus // (tp * pp)
            if pp > m.num_layers or dp > inst.workload.batch_sequences:
                continue
            per_stage = tp * dp
            for ep in divisors(m.num_experts):
                for etp in divisors(tp):
                    if per_stage % (ep * etp) or m.expert_ffn_size % etp:
                        continue
                    edp = per_stage // (ep * etp)
                    for mb in micro_batch_counts(inst, dp):
                        out.append(Degrees(tp, pp, dp, ep, etp, edp, mb))
    return out
