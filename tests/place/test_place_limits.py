"""``moeopt place`` on hostile inputs and tight time limits.

Every hostile file is generated here in ``tmp_path``. Bad input must end with exit 2 and one
line naming the field and the cap, before anything large is allocated (an allocation of the
promised size would fail with MemoryError, exit 1, or take minutes). Sums that used to wrap
around in int64 are checked against values worked out by hand. Time-limit tests use generous
wall-clock bounds (30 s for a command limited to 1 s) and check that the JSON tells the truth
about each layer (a plan valid slot by slot, status "optimal" only when the bound is met).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from optimizer.cli import main
from optimizer.inputs.load_files import MAX_COUNT, MAX_EXPERTS, MAX_LAYERS, MAX_VALUES
from optimizer.place import PlaceSpec, Settings, place
from optimizer.place.heuristic import _swap
from optimizer.place.layer_state import LayerState
from optimizer.place.problem import MAX_SLOTS, MAX_TOTAL_SLOTS

REPO = Path(__file__).resolve().parents[2]
INSTANCE = REPO / "instances" / "10b_moe.json"


def run_place(args):
    return CliRunner().invoke(main, ["place", *args])


def one_line_exit_2(res, *needles: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def npy_header_only(path: Path, shape: tuple[int, ...], descr: str = "<i8") -> str:
    """A 128-byte .npy file whose header promises ``shape`` and holds no data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    path.write_bytes(buf.getvalue())
    assert len(buf.getvalue()) == 128
    return str(path)


def check_plan(n: list[int], spec: PlaceSpec, ranks: list[list[int]]) -> float:
    """Slots and replica rules of a plan; returns its max rank load, recomputed here."""
    E, G = len(n), spec.num_ranks
    assert len(ranks) == G and all(len(r) == spec.slots_per_rank(E) for r in ranks)
    assert all(len(set(r)) == len(r) for r in ranks), "two replicas of one expert on a rank"
    count = [0] * E
    for r in ranks:
        for e in r:
            count[e] += 1
    assert min(count) >= 1, "an expert without a replica"
    return max(sum(n[e] / count[e] for e in r) for r in ranks)


def check_honest(doc: dict, counts: np.ndarray, spec: PlaceSpec) -> None:
    """Each layer: a valid plan whose max load is the one reported, the bound between the
    mean and the max, "optimal" only when the bound meets the max, and the top-level status
    and time_limit_reached consistent with the layers."""
    for lay, row in zip(doc["layers"], counts):
        top = check_plan([int(x) for x in row], spec, lay["ranks"])
        assert lay["max_load"] == pytest.approx(top, rel=1e-9, abs=1e-3)
        assert lay["mean_load"] - 1e-3 <= lay["lower_bound"] <= lay["max_load"] + 1e-3
        if lay["status"] == "optimal":
            assert lay["gap"] == 0 and lay["lower_bound"] == lay["max_load"]
            assert "time_limit_reached" not in lay
        else:
            assert lay["lower_bound"] < lay["max_load"]
    statuses = {lay["status"] for lay in doc["layers"]}
    assert doc["status"] == ("optimal" if statuses == {"optimal"} else "feasible")
    assert doc.get("time_limit_reached", False) == any(lay.get("time_limit_reached") for lay in doc["layers"])


# --------------------------------------------------------------------------- int64 overflow

def test_npy_steps_summing_past_int64_is_refused(tmp_path):
    """9300 steps of 10^15 sum to 9.3e18 > 2^63 - 1 = 9.22e18: it used to wrap to a negative
    max load with exit 0; now the summed count is over the cap (10^15) and named."""
    path = tmp_path / "steps.npy"
    np.save(path, np.full((9300, 2, 2), 10**15, dtype=np.int64))
    res = run_place([f"--loads={path}", "--ep=2"])
    one_line_exit_2(res, "summed over steps", str(MAX_COUNT))


def test_npy_many_steps_under_the_cap_sum_exactly(tmp_path):
    """20000 steps (more than one summing chunk) of 10^10 and 1: layer sums 2e14 and 20000,
    far under the cap, summed exactly."""
    arr = np.ones((20000, 1, 2), dtype=np.int64)
    arr[:, 0, 0] = 10**10
    path = tmp_path / "steps.npy"
    np.save(path, arr)
    res = run_place([f"--loads={path}", "--ep=1", "--format=json", "--time-limit=5"])
    assert res.exit_code == 0, res.stderr
    # one rank holds both experts: 20000 * 10^10 + 20000 * 1 = 200000000020000
    assert json.loads(res.stdout)["layers"][0]["max_load"] == 200_000_000_020_000


def test_huge_layer_is_kept_not_dropped(tmp_path):
    """2 x 9300: layer 0 all 10^15 (its row sum 9.3e18 wraps in int64 and the layer used to
    be dropped as "all zero"), layer 1 all ones. On 2 ranks without replicas every rank holds
    4650 experts: max loads 4650 * 10^15 = 4.65e18 and 4650, both optimal."""
    arr = np.ones((2, 9300), dtype=np.int64)
    arr[0] = 10**15
    path = tmp_path / "wide.npy"
    np.save(path, arr)
    res = run_place([f"--loads={path}", "--ep=2", "--format=json", "--time-limit=20"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [lay["layer"] for lay in doc["layers"]] == [0, 1]
    assert [lay["max_load"] for lay in doc["layers"]] == [4.65e18, 4650.0]
    assert doc["status"] == "optimal"


def test_instance_counts_with_a_huge_layer_keep_every_layer(tmp_path):
    """Schema-valid ``expert_load.counts`` (each count <= 10^15) at the schema's expert cap
    (4096): layer 0 sums to 4.096e18, within int64 but only just, and must be kept whole.
    The 2 x 9300 case of the file readers is refused by that cap before any sum is taken."""
    inst = json.loads(INSTANCE.read_text())
    inst["model"].update(num_experts=4096, num_layers=2)
    inst["expert_load"] = {"kind": "counts", "counts": [[10**15] * 4096, [1] * 4096]}
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(inst))
    res = run_place([str(path), "--ep=2", "--format=json", "--time-limit=20"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    # equal loads on 2 ranks: each holds 2048 experts, 2048 x 10^15 and 2048 x 1
    assert [lay["max_load"] for lay in doc["layers"]] == [2.048e18, 2048.0]
    inst["model"].update(num_experts=9300)
    inst["expert_load"] = {"kind": "counts", "counts": [[10**15] * 9300, [1] * 9300]}
    path.write_text(json.dumps(inst))
    one_line_exit_2(run_place([str(path), "--ep=2"]), "num_experts")


# --------------------------------------------------------------------------- size caps

@pytest.mark.parametrize("shape,needle", [
    ((10**6, 10**6), f"at most {MAX_LAYERS}"),            # 8 TB promised by 128 bytes
    ((2, 10**7), f"at most {MAX_EXPERTS}"),
    ((10**4, 4096, 256), f"at most {MAX_VALUES}"),         # steps x layers x experts
])
def test_npy_header_shape_is_capped_before_loading(tmp_path, shape, needle):
    path = npy_header_only(tmp_path / "big.npy", shape)
    started = time.monotonic()
    res = run_place([f"--loads={path}", "--ep=2"])
    one_line_exit_2(res, needle)
    assert time.monotonic() - started < 30  # generous: nothing of that size was touched


def test_npy_shorter_than_its_header_is_refused(tmp_path):
    path = npy_header_only(tmp_path / "short.npy", (100, 100))
    one_line_exit_2(run_place([f"--loads={path}", "--ep=2"]), "shorter than its header")


@pytest.mark.parametrize("text,needle", [
    ("0,1000000000000,5\n", f"expert='1000000000000': must be <= {MAX_EXPERTS - 1}"),  # 7 TiB before
    ("0," + "9" * 5000 + ",5\n", "must be <="),                  # int() would refuse > 4300 digits
    ("10000000000,0,5\n", "layer='10000000000': must be <="),
    ("0,0," + "9" * 30 + "\n", f"counts must be <= {MAX_COUNT}"),
    ("0,0,600000000000000\n0,0,600000000000000\n", "summed tokens 1200000000000000 exceed"),
])
def test_csv_ids_and_counts_are_capped(tmp_path, text, needle):
    path = tmp_path / "loads.csv"
    path.write_text(text)
    one_line_exit_2(run_place([f"--loads={path}", "--ep=1"]), needle)


def test_csv_layers_times_experts_is_capped(tmp_path):
    """1000 layers and expert id 65535: 1000 x 65536 = 65.5M numbers > MAX_VALUES."""
    path = tmp_path / "loads.csv"
    path.write_text("".join(f"{lay},0,1\n" for lay in range(999)) + "999,65535,1\n")
    one_line_exit_2(run_place([f"--loads={path}", "--ep=1"]), f"at most {MAX_VALUES}")


def test_instance_with_absurd_expert_count_is_refused(tmp_path):
    inst = json.loads(INSTANCE.read_text())
    inst["model"]["num_experts"] = 10**8
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(inst))
    # the schema caps experts at 4096 before the placement's own cap (MAX_VALUES) is reached
    one_line_exit_2(run_place([str(path), "--ep=8"]), "model.num_experts=100000000", "4096")


@pytest.mark.parametrize("rows,args,needle", [
    ("0,0,5\n0,1,3\n", ["--ep=4"], "--ep=4: more ranks than expert slots"),          # 2 slots
    ("0,50000,1\n", ["--ep=1", "--redundant=1000000"], f"slots per layer; at most {MAX_SLOTS}"),
    ("".join(f"{lay},1,1\n" for lay in range(20)), ["--ep=2", "--redundant=200000"],
     f"--redundant=200000: 20 layers x (2 experts + 200000 redundant) = 4000040 slots; "
     f"at most {MAX_TOTAL_SLOTS}"),
])
def test_absurd_ep_and_redundant_exit_2(tmp_path, rows, args, needle):
    path = tmp_path / "loads.csv"
    path.write_text(rows)
    one_line_exit_2(run_place([f"--loads={path}", *args]), needle)


# --------------------------------------------------------------------------- time limit

@pytest.mark.slow
def test_huge_ep_on_two_experts_is_fast_and_optimal(tmp_path):
    """2 experts (100 and 50 tokens) on 16384 ranks with 16382 redundant slots took 97 s
    with --time-limit 1. One slot per rank; the best counts r0 + r1 = 16384 give
    max(100/10923, 50/5461) = 50/5461 = 0.0091558 (r0 = 10922 gives 100/10922 = 0.0091559)."""
    path = tmp_path / "two.csv"
    path.write_text("0,0,100\n0,1,50\n")
    started = time.monotonic()
    res = run_place([f"--loads={path}", "--ep=16384", "--redundant=16382", "--time-limit=1",
                     "--format=json"])
    assert time.monotonic() - started < 30
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    check_honest(doc, np.array([[100, 50]]), PlaceSpec(16384, 16382))
    assert doc["layers"][0]["max_load"] == round(50 / 5461, 3)


def test_a_zero_time_limit_still_returns_the_packed_plan():
    """Time limit 0: the packing (the EPLB recipe, never cut by the clock) still runs, and
    nothing after it. Loads 8, 7, 6, 5, 4, 3 on 2 ranks of 3 slots, heaviest first onto the
    less loaded rank (ties: lower rank): 8 -> r0 (8), 7 -> r1 (7), 6 -> r1 (13), 5 -> r0
    (13), 4 -> r0 (17, tie to the lower rank), 3 -> r1 (16): max 17, which is optimal (the
    total 33 is odd) but above the bound 33 / 2 = 16.5, so it is reported as a greedy plan
    that the clock stopped."""
    counts = np.array([[8, 7, 6, 5, 4, 3]], dtype=np.int64)
    spec = PlaceSpec(2)
    doc = place(counts, [0], spec, Settings(time_limit_s=0.0)).to_json()
    check_honest(doc, counts, spec)
    lay = doc["layers"][0]
    assert (lay["max_load"], lay["lower_bound"], lay["status"]) == (17.0, 16.5, "feasible")
    assert lay["ranks"] == [[0, 3, 4], [1, 2, 5]] and lay["method"] == "greedy"
    assert lay["time_limit_reached"] and doc["time_limit_reached"]


def deepseek_like(layers: int, experts: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.lognormal(0.0, 1.0, size=(layers, experts)) * 500).astype(np.int64) + 1


@pytest.mark.slow
def test_many_layers_within_a_one_second_limit(tmp_path):
    """58 x 256 loads on 16 ranks took 6.7 s with --time-limit 1. Now every layer has a
    valid plan, the statuses are honest, and the command ends well within 30 s."""
    counts = deepseek_like(58, 256, seed=0)
    path = tmp_path / "ds.npy"
    np.save(path, counts)
    started = time.monotonic()
    res = run_place([f"--loads={path}", "--ep=16", "--time-limit=1", "--format=json"])
    assert time.monotonic() - started < 30
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert len(doc["layers"]) == 58
    check_honest(doc, counts, PlaceSpec(16))


def test_a_budget_far_too_small_says_so(tmp_path):
    """0.2 s for 58 layers: a layer whose bound is not met (so neither proof nor bound ends
    its search) cannot finish its 400-try local search in its share, so the clock stops it."""
    counts = deepseek_like(58, 256, seed=0)
    result = place(counts, list(range(58)), PlaceSpec(16), Settings(time_limit_s=0.2))
    doc = result.to_json()
    check_honest(doc, counts, PlaceSpec(16))
    assert doc["status"] == "feasible" and doc["time_limit_reached"] is True


@pytest.mark.parametrize("layers,experts,ranks,redundant,nodes", [
    (2, 24, 8, 0, 1),      # exact model, proven optimal
    (1, 64, 64, 64, 8),    # local search until it stalls, then ranks to nodes (proven)
])
@pytest.mark.slow
def test_fixed_seed_is_deterministic_when_the_budget_is_not_the_clock(layers, experts, ranks,
                                                                       redundant, nodes):
    """Layers ending by proof, stall or bound give the same document twice."""
    counts = deepseek_like(layers, experts, seed=4)
    spec = PlaceSpec(ranks, redundant, nodes)
    docs = []
    for _ in range(2):
        doc = place(counts, list(range(layers)), spec, Settings(time_limit_s=120, seed=3)).to_json()
        assert "time_limit_reached" not in doc
        check_honest(doc, counts, spec)
        doc.pop("wall_s")
        docs.append(json.dumps(doc, sort_keys=True))
    assert docs[0] == docs[1]


# --------------------------------------------------------------------------- vectorized swap

def loop_swap(n, count, ra, rb, movable, top):
    """The single swap search written as plain loops (the reference): the first (i, j) in
    row-major order with the lowest larger-side load below top * (1 - 1e-9)."""
    S = len(ra)
    pe = list(ra) + list(rb)
    pw = n[np.array(pe)] / count[np.array(pe)]
    la, lb = pw[:S].sum(), pw[S:].sum()   # the same float sums as the solver's
    best, pick = top * (1 - 1e-9), None
    for i in range(S):
        if not movable[i] or pe[i] in pe[S:]:
            continue
        for j in range(S, 2 * S):
            if not movable[j] or pe[j] in pe[:S]:
                continue
            worst = max(la - (pw[i] - pw[j]), lb + (pw[i] - pw[j]))
            if worst < best:
                best, pick = worst, (i, j)
    return pick, best


@pytest.mark.parametrize("seed", range(6))
def test_numpy_swap_matches_the_loop(seed):
    rng = np.random.default_rng(seed)
    E, G, R = 48, 4, 8     # 14 slots per rank: the single-swap regime (S > 9)
    n = rng.integers(1, 1000, size=E).astype(np.int64)
    if seed % 2:
        n[:6] = 5          # ties
    st = LayerState(n, PlaceSpec(G, R), seed)
    loads = st.loads()
    a, b = int(np.argmax(loads)), int(np.argmin(loads))
    pe = np.concatenate([st.R[a], st.R[b]])
    pw = st.n[pe] / st.count[pe]
    movable = rng.random(2 * st.S) > 0.2
    expect, best = loop_swap(st.n, st.count, st.R[a], st.R[b], movable, float(loads[a]))
    before_a, before_b = st.R[a].copy(), st.R[b].copy()
    moved = _swap(st, a, b, pe, pw, movable, float(loads[a]), time.monotonic() + 60)
    assert moved == (expect is not None)
    if expect is not None:
        i, j = expect
        assert st.R[a][i] == before_b[j - st.S] and st.R[b][j - st.S] == before_a[i]
        new = st.n[st.R[[a, b]]] / st.count[st.R[[a, b]]]
        assert max(new.sum(axis=1)) == pytest.approx(best, rel=1e-12)
