"""The tiny service instance the service tests share, and the brute force over it: every
(configuration, knob tuple) candidate on a GPU count, evaluated with no pruning.

The brute force is the costly part of those tests (about 100 CPU-seconds on 4 GPUs), so it is
computed once per process; the tests that read it carry the ``xdist_group`` mark
``TINY_SERVICE_GROUP`` so that pytest-xdist (``--dist loadgroup``) runs them in one process.
"""

from __future__ import annotations

import functools

from optimizer.costs.serving.candidates import ServiceCandidate, evaluate_group
from optimizer.costs.serving.replica import service_degrees, service_load
from optimizer.costs.serving.search import prepared_groups
from optimizer.costs.serving.service_types import Replica, ServiceLoad
from optimizer.cpsat.service_solve import placements
from optimizer.inputs.schema import Instance
from optimizer.plan.service import service_slo
from optimizer.search.sweep import with_gpus

TINY_SERVICE_GROUP = "tiny_service_brute_force"

TINY = {
    "name": "tiny_service",
    "model": {"num_layers": 4, "hidden_size": 1024, "num_attention_heads": 8, "num_kv_heads": 8,
              "head_dim": 128, "num_experts": 8, "top_k": 2, "expert_ffn_size": 1024,
              "vocab_size": 8000},
    "hardware": {"num_gpus": 4, "gpus_per_node": 4,
                 "gpu": {"peak_tflops": 100.0, "memory_gb": 4.0, "hbm_bandwidth_gb_s": 1000.0},
                 "intra_node_bandwidth_gb_s": 100.0, "inter_node_bandwidth_gb_s": 25.0,
                 "runtime_reserve_gb": 1.0},
    "workload": {"kind": "service", "arrival_rate_rps": 20.0, "prompt_tokens": 2000, "output_tokens": 200},
    "requirements": {"max_ttft_s": 0.5, "max_tpot_ms": 20.0},
    "expert_load": {"kind": "power_law", "exponent": 0.8, "seed": 3},
}


@functools.cache
def every_candidate(gpus: int) -> tuple[ServiceLoad, list[tuple[Replica, ServiceCandidate]]]:
    """(the load, every (replica, candidate) of every configuration and knob tuple of TINY on
    ``gpus`` GPUs at its 20 requests/s): each group evaluated whole, no pruning, the same
    for every objective."""
    inst = with_gpus(Instance.model_validate(TINY), gpus)
    load, slo = service_load(inst.workload), service_slo(inst)
    loads, ranks = placements(inst, list({d.ep for d in service_degrees(inst, gpus)}))
    groups, _ = prepared_groups(inst, gpus, load, loads, ranks)
    return load, [(rep, c) for deg, group, rep in groups
                  for c in evaluate_group(deg, group, rep, load, slo, inst.workload.arrival_rate_rps)]
