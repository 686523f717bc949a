"""The CP-SAT search against an exhaustive enumeration on small random instances.

Each instance is built from a seed: a tiny MoE model (1-4 layers, 2/4/8 experts), 1-8 GPUs,
a small batch, random expert loads, and requirements drawn from the instance's own
per-configuration figures so that they bind: the memory limit lies between the smallest
and the largest peak memory of the configurations' fastest splits (sometimes exactly on
one, sometimes below all of them), TTFT and throughput limits between the fastest and the slowest
configuration (sometimes below the fastest, which makes the instance infeasible).
"""

from __future__ import annotations

import json
import random

import pytest

from optimizer.costs.candidates import admissible_degrees
from optimizer.costs.expert_loads import expert_loads
from optimizer.cpsat.solve import solve
from optimizer.errors import InfeasibleError
from optimizer.inputs.schema import Instance
from optimizer.plan.check import check_plan_file
from optimizer.plan.files import plan_to_json
from tests.oracles import bruteforce

NUM_RANDOM = 120
SEEDS = range(NUM_RANDOM)
TIME_LIMIT_S = 20.0
NO_CAP_BYTES = 1 << 62
SCHEMA_MIN = 1000  # the schema takes physical figures >= 1e-6 of their unit: 1000 ns, 1000 B


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _model(rng: random.Random, index: int) -> dict:
    """A tiny MoE model spec."""
    experts = rng.choice([2, 4, 4, 8, 8])
    heads = rng.choice([1, 2, 4, 8])
    return {
        "name": f"tiny{index}", "num_layers": rng.randint(1, 4),
        "hidden_size": rng.choice([32, 64, 128, 256, 512]),
        "num_attention_heads": heads, "num_kv_heads": rng.choice(divisors(heads)),
        "head_dim": rng.choice([8, 16, 32, 64]), "num_experts": experts,
        "top_k": rng.randint(1, min(experts, 3)),
        "expert_ffn_size": rng.choice([32, 64, 96, 128, 256, 1024]),
        "ffn_matrices": rng.choice([2, 3]), "vocab_size": rng.choice([64, 500, 4000]),
        "tie_word_embeddings": rng.random() < 0.3,
        "weight_dtype": rng.choice(["fp16", "bf16", "fp8", "fp32"]),
        "kv_dtype": rng.choice(["fp16", "fp8"]),
    }


def _hardware(rng: random.Random) -> dict:
    """1-8 GPUs on nodes of 1-8; slow-ish links so that communication shows in ns."""
    return {
        "num_gpus": rng.choice([1, 2, 3, 4, 4, 6, 8, 8, 8]), "gpus_per_node": rng.choice([1, 2, 4, 8]),
        "gpu": {"peak_tflops": rng.choice([0.5, 2.0, 10.0]), "memory_gb": 80,
                "hbm_bandwidth_gb_s": rng.choice([5.0, 50.0, 500.0]),
                "compute_efficiency": rng.choice([0.4, 0.5, 1.0]), "hbm_efficiency": 0.8},
        "intra_node_bandwidth_gb_s": rng.choice([1.0, 10.0, 100.0]),
        "inter_node_bandwidth_gb_s": rng.choice([0.1, 1.0, 10.0]),
        "intra_node_latency_us": rng.choice([0.0, 0.5, 5.0]),
        "inter_node_latency_us": rng.choice([1.0, 10.0]),
        "nccl_buffer_gb": 0.0, "runtime_reserve_gb": rng.choice([0.0, 1e-6]),
    }


def _load(rng: random.Random, layers: int, experts: int) -> dict:
    """Uniform, power-law or measured-counts expert loads."""
    kind = rng.choice(["uniform", "power_law", "power_law", "counts", "counts"])
    if kind == "uniform":
        return {"kind": "uniform"}
    if kind == "power_law":
        return {"kind": "power_law", "exponent": rng.choice([0.3, 0.8, 1.5, 3.0]),
                "seed": rng.randint(0, 10**6)}
    counts = [[rng.randint(0, 50) for _ in range(experts)] for _ in range(layers)]
    for row in counts:
        row[rng.randrange(experts)] += 1  # no all-zero layer
    return {"kind": "counts", "counts": counts}


def base_instance(seed: int) -> tuple[dict, random.Random]:
    """Instance dict without requirements, and the generator to draw them with."""
    rng = random.Random(seed)
    model = _model(rng, seed)
    doc = {
        "name": f"bf{seed}", "model": model, "hardware": _hardware(rng),
        "workload": {"batch_sequences": rng.choice([1, 2, 3, 4, 5, 6, 8, 8]), "prompt_tokens": rng.randint(1, 300),
                     "moe_buffer_factor": rng.choice([1.0, 1.25, 2.0])},
        "expert_load": _load(rng, model["num_layers"], model["num_experts"]),
        "search": {"max_micro_batches": rng.choice([1, 2, 4, 8]), "time_limit_s": TIME_LIMIT_S},
    }
    while not admissible_degrees(Instance.model_validate(doc), doc["hardware"]["num_gpus"]):
        doc["hardware"]["num_gpus"] = rng.randint(1, 8)  # no configuration is an input error
    return doc, rng


def _between(rng: random.Random, low: int, high: int, below: float) -> int:
    """A value in [low, high], occasionally exactly on an end, or below ``low``
    with probability ``below``."""
    r = rng.random()
    if r < below:
        return max(1, low - 1 - rng.randint(0, max(1, low // 20)))
    if r < below + 0.15:
        return rng.choice([low, high])
    return rng.randint(low, high)


def _memory_requirement(inst: Instance, rng: random.Random) -> float | None:
    """A memory limit between the smallest and largest peak memory of the configurations'
    fastest splits, GB (None: the GPU's capacity, which fits everything here)."""
    bests, _ = bruteforce.per_config_best(inst, cap_bytes=NO_CAP_BYTES, limits_ns={})
    needs = sorted({b.max_memory_bytes for b in bests})
    if rng.random() < 0.1 or (len(needs) < 2 and rng.random() < 0.5):
        return None
    if rng.random() < 0.2:
        return max(SCHEMA_MIN, rng.choice(needs)) / 1e9  # exactly one configuration's need
    return max(SCHEMA_MIN, _between(rng, needs[0], needs[-1], below=0.08)) / 1e9


def _timing_requirements(inst: Instance, rng: random.Random) -> dict:
    """TTFT and throughput limits among the makespans the memory limit allows."""
    bests, _ = bruteforce.per_config_best(inst, limits_ns={})
    spans = sorted({b.makespan_ns for b in bests})
    if not spans:
        return {}
    tokens = inst.workload.batch_sequences * inst.workload.prompt_tokens
    out = {}
    if rng.random() < 0.5:
        out["max_ttft_s"] = max(SCHEMA_MIN, _between(rng, spans[0], spans[-1], below=0.1)) / 1e9
    if rng.random() < 0.4:
        span_ns = _between(rng, spans[0], spans[-1], below=0.1)
        if rng.random() < 0.5:
            out["min_throughput_tokens_per_ms"] = tokens / (span_ns / 1e6)
        else:
            out["min_throughput_tokens_per_ms"] = tokens / (span_ns / 1e6) / inst.hardware.num_gpus
            out["throughput_scope"] = "per_gpu"
    return out


def random_instance(seed: int) -> Instance:
    """A validated small instance whose requirements bind (see the module docstring)."""
    doc, rng = base_instance(seed)
    inst = Instance.model_validate(doc)
    memory_gb = _memory_requirement(inst, rng)
    if memory_gb is not None:
        doc["requirements"] = {"max_memory_gb": memory_gb}
        inst = Instance.model_validate(doc)
    doc["requirements"] = {**doc.get("requirements", {}), **_timing_requirements(inst, rng)}
    return Instance.model_validate(doc)


@pytest.fixture(scope="module")
def instances() -> dict[int, Instance]:
    return {seed: random_instance(seed) for seed in SEEDS}


@pytest.fixture(scope="module")
def references(instances) -> dict[int, dict | None]:
    return {seed: bruteforce.brute_force(inst) for seed, inst in instances.items()}


@pytest.mark.parametrize("seed", SEEDS)
def test_solve_matches_brute_force(seed, instances, references, tmp_path):
    """Same lexicographic optimum as the enumeration, or infeasible exactly when it is;
    the plan passes the checker and its evaluation agrees with the solver's figures."""
    inst, ref = instances[seed], references[seed]
    if ref is None:
        with pytest.raises(InfeasibleError) as info:
            solve(inst, time_limit_s=TIME_LIMIT_S, workers=1, seed=0)
        assert info.value.payload["conflicts"]
        return
    result = solve(inst, time_limit_s=TIME_LIMIT_S, workers=1, seed=0)
    assert result.status == "optimal"
    assert result.primary.objective == ref["objective_ns"]
    assert result.evaluation.objective_ns == result.primary.objective
    assert result.evaluation.makespan_ns == ref["makespan_ns"]
    assert result.secondary.objective == ref["makespan_ns"]
    assert result.plan.deg in ref["optimal_degrees"]
    path = tmp_path / "plan.json"
    doc = plan_to_json(result.plan, result.evaluation, result.status, {})
    path.write_text(json.dumps(doc))
    _, text, feasible = check_plan_file(inst, str(path))
    assert feasible, text


def test_instances_exercise_the_search(instances, references):
    """A meaningful share of the optima needs EP > 1 or PP > 1 (every optimal
    configuration has one), some need TP > 1, and some instances are infeasible."""
    feasible = [r for r in references.values() if r is not None]
    sharded = [r for r in feasible if all(d.ep > 1 or d.pp > 1 for d in r["optimal_degrees"])]
    tensor = [r for r in feasible if all(d.tp > 1 for d in r["optimal_degrees"])]
    infeasible = len(references) - len(feasible)
    assert len(sharded) >= NUM_RANDOM // 5, (len(sharded), len(tensor), infeasible)
    assert len(tensor) >= 3
    # at most 3/8 infeasible (41 of 120 since FP8 checkpoints keep embedding, head, router
    # and norms in bf16: fp8 instances need more memory and a slower LM head)
    assert 5 <= infeasible <= NUM_RANDOM * 3 // 8


def test_brute_force_reference_plan_evaluates_to_its_figures(instances, references):
    """The enumerator's own witness plan, rebuilt and evaluated, has its figures."""
    from optimizer.costs.layout import megatron_layout
    from optimizer.plan.evaluate import Plan, evaluate
    for seed, ref in references.items():
        if ref is None:
            continue
        inst = instances[seed]
        plan = Plan(inst.name, ref["deg"], ref["stages"], ref["placement"],
                    megatron_layout(ref["deg"], inst.hardware.gpus_per_node))
        ev = evaluate(inst, plan)
        assert (ev.objective_ns, ev.makespan_ns, ev.feasible) == (
            ref["objective_ns"], ref["makespan_ns"], True), seed


@pytest.mark.parametrize("seed", range(200, 212))
def test_min_hot_shortcut_matches_joint_enumeration(seed):
    """Per-layer minimum hot loads give the same optimum as enumerating joint placements."""
    doc, rng = base_instance(seed)
    doc["model"]["num_layers"] = rng.randint(1, 2)
    doc["model"]["num_experts"] = rng.choice([2, 4])
    doc["model"]["top_k"] = 1
    doc["expert_load"] = _load(rng, doc["model"]["num_layers"], doc["model"]["num_experts"])
    inst = Instance.model_validate(doc)
    bests, _ = bruteforce.per_config_best(inst, limits_ns={})
    if bests and rng.random() < 0.7:
        spans = sorted(b.makespan_ns for b in bests)
        doc["requirements"] = {"max_ttft_s": spans[len(spans) // 2] / 1e9}
        inst = Instance.model_validate(doc)
    fast, joint = bruteforce.brute_force(inst), bruteforce.brute_force_joint(inst)
    if fast is None:
        assert joint is None
    else:
        assert (joint["objective_ns"], joint["makespan_ns"]) == (fast["objective_ns"],
                                                                  fast["makespan_ns"])


@pytest.mark.parametrize("seed", range(8))
def test_bitmask_search_matches_partition_enumeration(seed):
    """The exact subset search and plain enumeration agree on the minimum hot load."""
    rng = random.Random(seed)
    for _ in range(25):
        experts = rng.choice([2, 4, 6, 8])
        ep = rng.choice(divisors(experts))
        loads = tuple(rng.randint(0, 1000) for _ in range(experts))
        fast, plain = bruteforce.min_hot_bitmask(loads, ep), bruteforce.min_hot_enumerated(loads, ep)
        assert fast[0] == plain[0]
        assert sorted(x for r in fast[1] for x in r) == list(range(experts))
        assert {len(r) for r in fast[1]} == {experts // ep}
        assert bruteforce.rank_loads_max(loads, fast[1]) == fast[0]


def test_partition_enumeration_counts():
    """E!/((E/ep)!^ep ep!) partitions: 8 experts in pairs -> 105, in fours -> 35."""
    assert sum(1 for _ in bruteforce.equal_partitions(tuple(range(8)), 2)) == 105
    assert sum(1 for _ in bruteforce.equal_partitions(tuple(range(8)), 4)) == 35
    assert sum(1 for _ in bruteforce.compositions(6, 3)) == 10


def test_loads_are_scaled(instances):
    """Every generated layer's loads sum to LOAD_SCALE (guards the generator)."""
    from optimizer.costs.units import LOAD_SCALE
    for inst in instances.values():
        assert all(sum(row) == LOAD_SCALE for row in expert_loads(inst))
