"""``moeopt pareto`` against an exhaustive enumeration on small random instances.

Each instance is built from a seed: a tiny MoE model (1-4 layers, 2/4/8 experts), 1-8 GPUs,
power-law expert loads, a memory limit drawn between the smallest and the largest memory
the configurations need (so that it rules out some configurations and some layer splits),
and sometimes a TTFT or throughput requirement (which must NOT shrink the front: it only
sets the ``feasible`` column). ``DECODE_SEEDS`` (2-5 layers) add generated tokens (when the
schema allows them): throughput then depends on the batch time and TTFT on the prefill
alone, two objectives that different layer splits of one configuration can trade.

Reference (``brute_force_points``): every admissible configuration
(``candidates.admissible_degrees``), every contiguous layer split, and per MoE layer a
placement of minimum hot load (``bruteforce.min_hot``, exact). Each such plan is a real
``evaluate.Plan`` on Megatron's layout scored by ``evaluate.evaluate``; the plans that fit
memory give integer objective vectors

    (batch makespan ns  [= tokens / throughput; per GPU at a fixed GPU count],
     TTFT ns, max_l hot_l * ep  [= (load_imbalance + 1) * LOAD_SCALE], communication ns)

and the reference front is the set of non-dominated vectors (without decode the first two
coincide). Table rows are turned back into the same integers (the conversion is checked to
round-trip exactly) and compared as sets.

Why one placement per layer suffices: a placement enters every figure only through each
layer's hot load L_l; makespan, TTFT, communication and imbalance are all non-decreasing in
every L_l (``moe_ns``/``moe_comm_ns`` are non-decreasing, stage times are sums, makespans
non-negative combinations of sums and maxima, imbalance a max), memory does not depend on
placement, and layers are placed independently. So every vector reachable with other
placements is weakly dominated by the min-hot one of the same configuration and split.
``test_min_hot_shortcut_gives_the_same_front`` checks this on tiny instances by enumerating
every achievable hot load of every layer.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from io import StringIO
from itertools import product
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

import optimizer.search.pareto as pareto_mod
from optimizer.cli import main as cli_main
from optimizer.costs.candidates import admissible_degrees
from optimizer.costs.expert_loads import expert_loads
from optimizer.costs.layout import Degrees, megatron_layout
from optimizer.costs.units import LOAD_SCALE, NS_PER_MS, NS_PER_S, gb_to_bytes_floor
from optimizer.cpsat.search import SolverSettings
from optimizer.inputs.files import load_model
from optimizer.inputs.schema import Instance
from optimizer.plan.check import check_plan_file
from optimizer.plan.evaluate import Plan, evaluate
from optimizer.plan.files import plan_to_json
from optimizer.search.pareto import pareto_table
from optimizer.search.sweep import with_gpus
from tests.oracles import bruteforce

REPO = Path(__file__).resolve().parents[2]
NUM_RANDOM = 60
SEEDS = list(range(NUM_RANDOM))
DECODE_SEEDS = list(range(1000, 1060))
SETTINGS = SolverSettings(time_limit_s=20.0, workers=1, seed=0)
INTERFACE_COLUMNS = ["num_gpus", "tp", "pp", "dp", "ep", "throughput_tokens_per_ms",
                     "throughput_tokens_per_ms_per_gpu", "ttft_s", "max_memory_gb",
                     "load_imbalance", "communication_ms", "feasible", "pareto"]
SORT_KEY = ["num_gpus", "ttft_s", "load_imbalance", "communication_ms"]
DEGREE_KEY = ["tp", "pp", "dp", "ep", "etp", "edp", "micro_batches"]  # ties: smallest degrees first
REQUIREMENT_CHECKS = {"memory_per_gpu", "ttft", "tpot", "throughput"}

Vector = tuple[int, int, int, int]  # (batch ns, TTFT ns, max_l hot_l * ep, communication ns)


# ---------------------------------------------------------------- random small instances
def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def base_doc(seed: int) -> tuple[dict, random.Random]:
    """An instance dict without requirements, and the generator to draw them with."""
    rng = random.Random(10_000 + seed)
    decode = seed in DECODE_SEEDS
    experts = rng.choice([2, 4, 4, 8, 8])
    heads = rng.choice([1, 2, 4, 8])
    layers = rng.randint(2, 5) if decode else rng.randint(1, 4)
    doc = {
        "name": f"pareto{seed}",
        "model": {
            "name": f"tiny{seed}", "num_layers": layers,
            "hidden_size": rng.choice([32, 64, 128, 256, 512]),
            "num_attention_heads": heads, "num_kv_heads": rng.choice(divisors(heads)),
            "head_dim": rng.choice([8, 16, 32, 64]), "num_experts": experts,
            "top_k": rng.randint(1, min(experts, 3)),
            "expert_ffn_size": rng.choice([32, 64, 128, 256, 1024]),
            "ffn_matrices": rng.choice([2, 3]), "vocab_size": rng.choice([64, 500, 4000]),
            "tie_word_embeddings": rng.random() < 0.3,
            "weight_dtype": rng.choice(["fp16", "bf16", "fp8", "fp32"]),
            "kv_dtype": rng.choice(["fp16", "fp8"]),
        },
        "hardware": {
            "num_gpus": rng.choice([2, 3, 4, 4, 6, 8, 8, 8]),
            "gpus_per_node": rng.choice([1, 2, 4, 8]),
            "gpu": {"peak_tflops": rng.choice([0.5, 2.0, 10.0]), "memory_gb": 80,
                    "hbm_bandwidth_gb_s": rng.choice([5.0, 50.0, 500.0]),
                    "compute_efficiency": rng.choice([0.4, 0.5, 1.0]), "hbm_efficiency": 0.8},
            # slow-ish links so that communication differs between configurations in ns
            "intra_node_bandwidth_gb_s": rng.choice([1.0, 10.0, 100.0]),
            "inter_node_bandwidth_gb_s": rng.choice([0.1, 1.0, 10.0]),
            "intra_node_latency_us": rng.choice([0.0, 0.5, 5.0]),
            "inter_node_latency_us": rng.choice([1.0, 10.0]),
            "nccl_buffer_gb": 0.0, "runtime_reserve_gb": rng.choice([0.0, 1e-6]),
        },
        "workload": {"batch_sequences": rng.choice([1, 2, 4, 4, 6, 8, 8]),
                     "prompt_tokens": rng.randint(1, 300),
                     "moe_buffer_factor": rng.choice([1.0, 1.25, 2.0]),
                     **({"output_tokens": rng.randint(1, 64)} if decode else {})},
        "expert_load": {"kind": "power_law", "exponent": rng.choice([0.3, 0.8, 1.5, 3.0]),
                        "seed": rng.randint(0, 10**6)},
        "search": {"max_micro_batches": 4 if decode else rng.choice([1, 2, 4, 8]),
                   "time_limit_s": 20.0},
    }
    try:
        Instance.model_validate(doc)
    except ValidationError as exc:
        if decode:
            pytest.skip(f"this version does not take output_tokens > 0: {exc.errors()[0]['msg']}")
        raise
    while not admissible_degrees(Instance.model_validate(doc), doc["hardware"]["num_gpus"]):
        doc["hardware"]["num_gpus"] = rng.randint(1, 8)
    return doc, rng


def memory_needs(inst: Instance) -> list[int]:
    """Per admissible configuration, the smallest peak per-GPU bytes over its layer splits
    (from ``evaluate`` on the same plans as the reference, with no memory limit)."""
    need: dict[Degrees, int] = {}
    for _, p in brute_force_points(inst, cap_bytes=None):
        need[p.deg] = min(need.get(p.deg, p.memory_bytes), p.memory_bytes)
    return sorted(need.values())


def random_instance(seed: int) -> Instance:
    """A validated small instance; the memory limit binds for some configurations."""
    doc, rng = base_doc(seed)
    needs = memory_needs(Instance.model_validate(doc))
    distinct = sorted(set(needs))
    if len(distinct) >= 2:
        # strictly inside the range (or exactly on an inner need): some fit, some do not
        if rng.random() < 0.3:
            cap = rng.choice(distinct[:-1])
        else:
            cap = rng.randint(distinct[0], distinct[-1] - 1)
        doc["requirements"] = {"max_memory_gb": cap / 1e9}
    inst = Instance.model_validate(doc)
    vectors = [vec for vec, _ in brute_force_points(inst)]
    if vectors and rng.random() < 0.6:  # a timing requirement that some front points miss
        batch_ns, ttft_ns = vectors[rng.randrange(len(vectors))][:2]
        if rng.random() < 0.5:
            doc["requirements"] = {**doc.get("requirements", {}), "max_ttft_s": ttft_ns / 1e9}
        else:
            doc["requirements"] = {**doc.get("requirements", {}),
                                   "min_throughput_tokens_per_ms": batch_tokens(inst) / (batch_ns / 1e6)}
    return Instance.model_validate(doc)


def batch_tokens(inst: Instance) -> int:
    wl = inst.workload
    return wl.batch_sequences * (wl.prompt_tokens + getattr(wl, "output_tokens", 0))


# ---------------------------------------------------------------- the exhaustive reference
@dataclass(frozen=True)
class RefPlan:
    vector: Vector
    deg: Degrees
    feasible: bool
    memory_bytes: int
    metrics: dict


def vector_of(ev, ep: int) -> Vector:
    ttft_ns = getattr(ev, "ttft_ns", ev.makespan_ns)
    return (ev.makespan_ns, ttft_ns, max(x * ep for x in ev.hot_loads), ev.communication_ns)


def brute_force_points(inst: Instance, placements_of=None,
                       cap_bytes: int | None | str = "instance") -> list[tuple[Vector, RefPlan]]:
    """Every (configuration, split, placement) plan that fits memory, evaluated.

    ``placements_of(ep)`` yields, per layer, the list of placements to try (default: one
    min-hot placement per layer); ``cap_bytes`` None keeps every plan."""
    gpus, n, gpn = inst.hardware.num_gpus, inst.model.num_layers, inst.hardware.gpus_per_node
    loads = expert_loads(inst)
    moe_ids = list(getattr(inst.model, "moe_layer_ids", range(n)))
    cap = gb_to_bytes_floor(inst.memory_limit_gb) if cap_bytes == "instance" else cap_bytes
    if placements_of is None:
        min_hot = {}

        def placements_of(ep):
            if ep not in min_hot:
                min_hot[ep] = [[bruteforce.min_hot(row, ep)[1]] for row in loads]
            return min_hot[ep]
    out = []
    for deg in admissible_degrees(inst, gpus):
        slots = megatron_layout(deg, gpn)
        for segments in bruteforce.compositions(n, deg.pp):
            stages = tuple(tuple(range(a, b)) for a, b in segments)
            for placement in product(*placements_of(deg.ep)):
                plan = Plan(inst.name, deg, stages, dict(zip(moe_ids, placement)), slots)
                ev = evaluate(inst, plan)
                if cap is not None:
                    memory_ok = [c.ok for c in ev.checks if c.name == "memory_per_gpu"]
                    assert memory_ok == [ev.max_memory_bytes <= cap]
                    if ev.max_memory_bytes > cap:
                        continue
                vec = vector_of(ev, deg.ep)
                out.append((vec, RefPlan(vec, deg, ev.feasible, ev.max_memory_bytes, ev.metrics())))
    return out


def non_dominated(vectors) -> set[Vector]:
    vs = set(vectors)
    return {v for v in vs
            if not any(w != v and all(a <= b for a, b in zip(w, v)) for w in vs)}


def row_vector(row, tokens: int) -> Vector:
    """The integer objective vector behind a table row's floats (checked to round-trip:
    the product computes these floats from exactly these integers)."""
    batch = round(tokens * NS_PER_MS / row.throughput_tokens_per_ms)
    ttft = round(row.ttft_s * NS_PER_S)
    hot = round((row.load_imbalance + 1.0) * LOAD_SCALE)
    comm = round(row.communication_ms * NS_PER_MS)
    assert tokens / (batch / NS_PER_MS) == row.throughput_tokens_per_ms
    assert ttft / NS_PER_S == row.ttft_s and comm / NS_PER_MS == row.communication_ms
    assert abs((hot / LOAD_SCALE - 1.0) - row.load_imbalance) < 1e-12
    return batch, ttft, hot, comm


# ---------------------------------------------------------------- one case per seed
@dataclass
class Case:
    inst: Instance
    points: list[tuple[Vector, RefPlan]]  # the enumeration (plans that fit memory)
    table: pd.DataFrame  # pareto_table(inst)
    seen: list  # (plan, evaluation) of every plan pareto_table evaluated

    @property
    def tokens(self) -> int:
        return batch_tokens(self.inst)

    def vectors(self, df: pd.DataFrame) -> list[Vector]:
        return [row_vector(r, self.tokens) for r in df.itertuples()]


_CASES: dict[int, Case] = {}


def case(seed: int) -> Case:
    """Instance, reference and product table of one seed (computed once per session).
    Every plan pareto_table evaluates is recorded (by wrapping the ``evaluate`` it calls)
    so that each row's plan can go through the checker."""
    if seed not in _CASES:
        inst = random_instance(seed)
        seen = []
        original = pareto_mod.evaluate

        def spy(inst_, plan):
            ev = original(inst_, plan)
            seen.append((plan, ev))
            return ev
        pareto_mod.evaluate = spy
        try:
            table = pareto_table(inst, settings=SETTINGS)
        finally:
            pareto_mod.evaluate = original
        _CASES[seed] = Case(inst, brute_force_points(inst), table, seen)
    return _CASES[seed]


# ---------------------------------------------------------------- the tests
@pytest.mark.parametrize("seed", SEEDS + DECODE_SEEDS)
def test_front_equals_brute_force(seed):
    """The ``pareto`` rows are, as a set of integer vectors, exactly the non-dominated set
    of the enumerated plans that meet every requirement, each vector once (duplicates are
    collapsed); each is proven, fits memory and is labelled feasible."""
    c = case(seed)
    expected = non_dominated(v for v, p in c.points if p.feasible)
    front = c.table[c.table["pareto"]]
    got = c.vectors(front)
    assert len(got) == len(set(got)), (seed, got)
    assert front["feasible"].all(), seed
    missing, extra = expected - set(got), set(got) - expected
    detail = {v: sorted({str(p.deg) for w, p in c.points if w == v}) for v in missing}
    assert not missing and not extra, (
        f"seed {seed}: missing {sorted(missing)} (configurations {detail}), extra {sorted(extra)}")
    feasible_of: dict[Vector, set[bool]] = {}
    for v, p in c.points:
        feasible_of.setdefault(v, set()).add(p.feasible)
    for row, v in zip(front.itertuples(), got):
        assert feasible_of[v] == {bool(row.feasible)}, (seed, v)
        assert bool(row.proven), (seed, v)
        assert row.max_memory_gb <= c.inst.memory_limit_gb * (1 + 1e-12)


@pytest.mark.parametrize("seed", SEEDS + DECODE_SEEDS)
def test_rows_plans_pass_the_checker(seed, tmp_path):
    """Every row comes from a real plan: that plan, written as a plan file, passes
    ``moeopt check``'s structure checks and fits memory, its feasibility is the row's
    ``feasible`` and its evaluation gives the row's figures exactly."""
    c = case(seed)
    if not c.seen:
        pytest.skip("pareto_table no longer calls optimizer.search.pareto.evaluate; rows checked by vector only")
    for row, vec in zip(c.table.itertuples(), c.vectors(c.table)):
        key = Degrees(row.tp, row.pp, row.dp, row.ep, row.etp, row.edp, row.micro_batches)
        matches = [(p, ev) for p, ev in c.seen if p.deg == key and vector_of(ev, key.ep) == vec]
        assert matches, (seed, key)
        plan, ev = matches[0]
        m = ev.metrics()
        for col in ("throughput_tokens_per_ms", "throughput_tokens_per_ms_per_gpu", "ttft_s",
                    "max_memory_gb", "load_imbalance", "communication_ms"):
            assert getattr(row, col) == m[col], (seed, col)
        path = tmp_path / f"plan-{row.Index}.json"
        path.write_text(json.dumps(plan_to_json(plan, ev, "optimal", {})))
        doc, text, feasible = check_plan_file(c.inst, str(path))
        structure = [x for x in doc["checks"] if x["name"] not in REQUIREMENT_CHECKS]
        assert structure and all(x["ok"] for x in structure), text
        assert feasible == bool(row.feasible), text
        memory = [x for x in doc["checks"] if x["name"] == "memory_per_gpu"]
        assert memory and memory[0]["ok"], text


@pytest.mark.parametrize("seed", SEEDS + DECODE_SEEDS)
def test_table_shape_and_order(seed):
    """Interface columns, sorted by the stated key then the degrees, no two rows with the
    same objectives and feasibility, and ``pareto`` marks exactly the non-dominated rows
    (all four objectives) among those meeting every requirement; ``misses`` names the
    failed requirements of the others."""
    df = case(seed).table
    assert set(INTERFACE_COLUMNS) <= set(df.columns)
    assert df.equals(df.sort_values(SORT_KEY + DEGREE_KEY, kind="stable").reset_index(drop=True))
    vectors = case(seed).vectors(df)
    keys = list(zip(vectors, df["feasible"]))
    assert len(keys) == len(set(keys)), seed
    nd = non_dominated(v for v, ok in keys if ok)
    assert [bool(ok) and v in nd for v, ok in keys] == [bool(x) for x in df["pareto"]]
    assert [m == "none" for m in df["misses"]] == [bool(x) for x in df["feasible"]]
    assert (df["num_gpus"] == df["tp"] * df["pp"] * df["dp"]).all()


def test_instances_exercise_the_front():
    """The generator is not degenerate: memory rules out configurations in many instances,
    many fronts have several points, and both feasible and infeasible points occur."""
    excluded, sizes, feasible_sizes, flags = 0, [], [], set()
    for seed in SEEDS:
        c = case(seed)
        fitting = {p.deg for _, p in c.points}
        excluded += len(fitting) < len(admissible_degrees(c.inst, c.inst.hardware.num_gpus))
        sizes.append(len(non_dominated(v for v, _ in c.points)))
        feasible_sizes.append(len(non_dominated(v for v, p in c.points if p.feasible)))
        flags |= {bool(x) for x in c.table["feasible"]}
    assert excluded >= NUM_RANDOM // 3, excluded
    assert sum(s >= 2 for s in sizes) >= NUM_RANDOM // 4, sizes
    # fronts of requirement-meeting plans: several with two points or more, some empty
    assert sum(s >= 2 for s in feasible_sizes) >= NUM_RANDOM // 6, feasible_sizes
    assert 0 in feasible_sizes, feasible_sizes
    assert max(sizes) >= 3, sizes
    assert flags == {True, False}


def _hot_choices(loads, ep):
    """Per layer, one placement per distinct achievable hot load (all partitions)."""
    out = []
    for row in loads:
        by_hot = {}
        for ranks in bruteforce.equal_partitions(tuple(range(len(row))), len(row) // ep):
            by_hot.setdefault(bruteforce.rank_loads_max(row, ranks), ranks)
        out.append(list(by_hot.values()))
    return out


@pytest.mark.parametrize("seed", range(100, 108))
def test_min_hot_shortcut_gives_the_same_front(seed):
    """Enumerating every achievable hot load of every layer (not only the minimum) gives
    the same non-dominated set: the monotonicity argument of the module docstring."""
    doc, rng = base_doc(seed)
    experts = doc["model"]["num_experts"] = rng.choice([4, 8])
    doc["model"]["num_layers"] = rng.randint(1, 3) if experts == 4 else 1  # keeps it fast
    doc["model"]["top_k"] = 1
    doc["hardware"]["num_gpus"] = rng.choice([2, 4, 8])
    doc["workload"]["batch_sequences"] = 8  # pp=1, dp=num_gpus is admissible: some EP > 1
    if seed % 2:  # with decode steps too, where the schema takes them
        doc["workload"]["output_tokens"] = rng.randint(1, 16)
        try:
            Instance.model_validate(doc)
        except ValidationError:
            del doc["workload"]["output_tokens"]
    inst = Instance.model_validate(doc)
    loads = expert_loads(inst)
    full = brute_force_points(inst, lambda ep: _hot_choices(loads, ep))
    short = brute_force_points(inst)
    assert non_dominated(v for v, _ in full) == non_dominated(v for v, _ in short)
    assert len(full) > len(short)  # other placements were really tried


@pytest.mark.slow  # ~15 s in all
@pytest.mark.parametrize("seed", DECODE_SEEDS)
def test_front_with_a_tpot_limit_equals_brute_force(seed):
    """TPOT is no objective, so a split slower in batch time and TTFT can meet a TPOT limit
    the fastest split misses: with a TPOT limit between two enumerated TPOTs, the front is
    still exactly the non-dominated set of the enumerated plans meeting every requirement."""
    base = random_instance(seed)
    tpots = sorted({p.metrics["tpot_ms"] for _, p in brute_force_points(base)})
    if len(tpots) < 2:
        pytest.skip("one TPOT only")
    limit_ms = (tpots[len(tpots) // 2 - 1] + tpots[len(tpots) // 2]) / 2  # no plan on the edge
    inst = base.model_copy(update={"requirements": base.requirements.model_copy(
        update={"max_tpot_ms": limit_ms})})
    points = brute_force_points(inst)
    expected = non_dominated(v for v, p in points if p.feasible)
    df = pareto_table(inst, settings=SETTINGS)
    got = [row_vector(r, batch_tokens(inst)) for r in df[df["pareto"]].itertuples()]
    assert len(got) == len(set(got)) and set(got) == expected, (seed, sorted(got), sorted(expected))
    assert all(t <= limit_ms for t in df.loc[df["pareto"], "tpot_ms"])
    assert (df["tokens_per_s_per_user"] == 1000.0 / df["tpot_ms"]).all()


def test_unreachable_timing_requirement_empties_the_front_not_the_table():
    """An unreachable TTFT limit leaves no row on the front, but every row is still
    computed (``--all`` shows what the requirement costs), each marked as missing ttft."""
    c = next(case(s) for s in SEEDS if case(s).inst.requirements.max_ttft_s is None
             and len(non_dominated(v for v, _ in case(s).points)) >= 2)
    tight = c.inst.model_copy(update={"requirements": c.inst.requirements.model_copy(
        update={"max_ttft_s": 1e-9})})
    loose_df, tight_df = pareto_table(c.inst, settings=SETTINGS), pareto_table(tight, settings=SETTINGS)
    assert set(c.vectors(loose_df)) == set(c.vectors(tight_df))
    assert len(tight_df) >= 2 and not tight_df["pareto"].any() and not tight_df["feasible"].any()
    assert all("ttft" in m.split() for m in tight_df["misses"])


@pytest.mark.slow
def test_seed_instance_front_on_8_gpus():
    """The seed instance (16 layers, 16 experts) on 8 GPUs: same front as the enumeration.
    Imbalance and communication do not depend on the layer split, so per configuration only
    its smallest-makespan split that fits memory can be on the front; the other engineer's
    ``bruteforce.per_config_best`` finds it by enumerating every split (timing limits off),
    and the plan it describes is rebuilt and evaluated here."""
    inst = with_gpus(load_model(REPO / "instances" / "10b_moe.json", Instance, "instance"), 8)
    bests, hots = bruteforce.per_config_best(inst, limits_ns={})
    vectors = []
    for b in bests:
        per_layer = hots[b.deg.ep]  # {moe layer: (hot, placement)} (older: a list by layer)
        items = per_layer.items() if isinstance(per_layer, dict) else enumerate(per_layer)
        plan = Plan(inst.name, b.deg, tuple(tuple(range(a, z)) for a, z in b.segments),
                    {layer: ranks for layer, (_, ranks) in items},
                    megatron_layout(b.deg, inst.hardware.gpus_per_node))
        ev = evaluate(inst, plan)
        assert ev.makespan_ns == b.makespan_ns and ev.checks[0].ok
        if ev.feasible:
            vectors.append(vector_of(ev, b.deg.ep))
    df = pareto_table(inst)
    front = df[df["pareto"]]
    assert {row_vector(r, batch_tokens(inst)) for r in front.itertuples()} == non_dominated(vectors)
    assert front["proven"].all() and len(front) >= 3


# ---------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def instance_file(tmp_path_factory):
    inst = next(case(s).inst for s in SEEDS
                if len(non_dominated(v for v, p in case(s).points if p.feasible)) >= 3)
    path = tmp_path_factory.mktemp("pareto") / "inst.json"
    path.write_text(inst.model_dump_json())
    return path, inst


def test_cli_csv_and_json_match_the_table(instance_file, tmp_path):
    """``--format csv`` and ``--format json`` (stdout and ``--output``) hold the front rows
    of ``pareto_table`` with the interface columns, sorted by the stated key."""
    path, inst = instance_file
    df = pareto_table(inst)
    front = df[df["pareto"]].reset_index(drop=True)
    runner = CliRunner()
    res = runner.invoke(cli_main, ["pareto", str(path), "--format", "csv"])
    assert res.exit_code == 0, res.output
    csv_df = pd.read_csv(StringIO(res.stdout))
    assert set(INTERFACE_COLUMNS) <= set(csv_df.columns)
    pd.testing.assert_frame_equal(csv_df, front, check_dtype=False)
    assert csv_df["pareto"].all() and len(csv_df) >= 3
    assert csv_df.equals(csv_df.sort_values(SORT_KEY, kind="stable").reset_index(drop=True))
    out = tmp_path / "front.json"
    res = runner.invoke(cli_main, ["pareto", str(path), "--format", "json", "--output", str(out)])
    assert res.exit_code == 0, res.output
    records = json.loads(out.read_text())
    assert [r["ttft_s"] for r in records] == list(front["ttft_s"])
    assert all(set(INTERFACE_COLUMNS) <= set(r) for r in records)
    res = runner.invoke(cli_main, ["pareto", str(path), "--format", "csv", "--all"])
    assert res.exit_code == 0
    assert len(pd.read_csv(StringIO(res.stdout))) == len(df)
    assert res.stdout.count("\n") == len(df) + 1


def test_cli_bad_format_exits_2(instance_file):
    path, _ = instance_file
    res = CliRunner().invoke(cli_main, ["pareto", str(path), "--format", "xml"])
    assert res.exit_code == 2
