"""The readable outputs added for busy readers: the compact placement view of ``solve``,
the status note of a "feasible" plan, the human-unit tables of ``pareto`` / ``sweep`` and
their top-N summary. Expected values are worked out by hand in the comments."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from click.testing import CliRunner

from optimizer.inputs.schema import Instance
from optimizer.output.text import duration, human_table, placement_summary_lines, si, status_note, top_lines

REPO = Path(__file__).resolve().parents[2]


def skewed_10b() -> Instance:
    """10b_moe (16 MoE layers of 16 experts) with measured counts: every layer uniform but
    layer 2, where expert 0 gets 9 tokens and the 15 others 1 each (24 in all)."""
    doc = json.loads((REPO / "instances" / "10b_moe.json").read_text())
    counts = [[1] * 16 for _ in range(16)]
    counts[2][0] = 9
    doc["expert_load"] = {"kind": "counts", "counts": counts}
    return Instance.model_validate(doc)


def test_placement_view_folds_runs_and_states_hot_share_and_balancedness():
    inst = skewed_10b()
    halves = (tuple(range(8)), tuple(range(8, 16)))  # EP 2: experts 0-7 on rank 0
    plan = SimpleNamespace(placement={layer: halves for layer in range(16)})
    lines = placement_summary_lines(plan, inst)
    cells = [c for line in lines for c in re.findall(r"layers? [\d-]+\s+hot\s+[\d.]+%\s+bal [\d.]+", line)]
    # uniform layers: each rank 8 of 16 experts -> 50.0 % of the tokens, bal = 0.5 / 0.5 = 1.
    # layer 2: rank 0 holds 9 + 7 = 16 of 24 tokens -> 66.7 %; mean 12 / hottest 16 = 0.750.
    assert [" ".join(c.split()) for c in cells] == [
        "layers 0-1 hot 50.0% bal 1.000", "layer 2 hot 66.7% bal 0.750", "layers 3-15 hot 50.0% bal 1.000"]
    assert len(lines) == 1 and len(lines[0]) < 120


def test_placement_view_is_short_where_expert_ids_are_long(tmp_path):
    """``solve`` prints the compact view by default (no line of expert ids) and every id
    with -v; the plan file has the ids either way."""
    from optimizer.cli import main as cli_main
    inst_path = REPO / "instances" / "10b_moe.json"
    short = CliRunner().invoke(cli_main, ["solve", str(inst_path), "--gpus", "8", "--output", str(tmp_path / "a.json")])
    full = CliRunner().invoke(cli_main, ["solve", str(inst_path), "--gpus", "8", "--output", str(tmp_path / "b.json"), "-v"])
    assert short.exit_code == 0 and full.exit_code == 0, short.output + full.output
    assert "r0:" not in short.stdout and "hot " in short.stdout and "-v: expert ids" in short.stdout
    ep = json.loads((tmp_path / "a.json").read_text())["degrees"]["ep"]
    assert ep > 1
    layer_lines = [line for line in full.stdout.splitlines() if line.lstrip().startswith("layer ") and "r0:" in line]
    assert len(layer_lines) == 16  # one line of ids per MoE layer
    section = short.stdout.split("-v: expert ids)\n")[1].split("Memory per GPU")[0].splitlines()
    assert 1 <= len(section) <= 6 and all(len(line) < 120 for line in section)  # 16 layers, 3 cells a line at most


SOLVED = {"status": "feasible", "gap": 0.22, "cp_sat_status": "optimal", "makespan_status": "optimal",
          "makespan_ms": 10.0, "makespan_bound_ms": 10.0}


@pytest.mark.parametrize("solver,layers,expected", [
    ({**SOLVED, "status": "optimal", "gap": 0.0}, None, None),
    # only the placement proofs are open: their budget is deterministic, so time does not help
    (SOLVED, [3, 4, 5, 9, 60], "the placements of MoE layer(s) 3-5, 9, 60 are the best found within "
     "their fixed deterministic proof budget, not proven optimal (objective gap 22.0%); more "
     "--time-limit does not help there"),
    ({**SOLVED, "cp_sat_status": "feasible"}, None,
     "CP-SAT stopped at the time limit in the objective phase (objective gap 22.0%); more --time-limit helps"),
    ({k: v for k, v in SOLVED.items() if not k.startswith("makespan")} | {"gap": 0.0}, None,
     "the objective is proven, but the time limit ended before the makespan phase ran (the batch "
     "makespan is not minimized); more --time-limit helps"),
    ({**SOLVED, "gap": 0.0, "makespan_status": "feasible", "makespan_bound_ms": 9.5}, None,
     "the objective is proven, but CP-SAT stopped at the time limit in the makespan phase (makespan "
     "10.000 ms, bound 9.500 ms); more --time-limit helps"),
    ({**SOLVED, "greedy": True}, None, "CP-SAT found no plan within the time limit, so this is the greedy "
     "warm start (objective gap 22.0%); more --time-limit helps"),
])
def test_status_note(solver, layers, expected):
    assert status_note(solver, layers) == expected


def test_solve_prints_the_note_under_a_feasible_status(tmp_path):
    """A time limit too short for the makespan phase (10b_moe on 8 GPUs: the objective phase
    alone takes most of 0.3 s here) gives "feasible" and says why; a normal run says nothing."""
    from optimizer.cli import main as cli_main
    res = CliRunner().invoke(cli_main, ["solve", str(REPO / "instances" / "10b_moe.json"), "--gpus", "8",
                                        "--output", str(tmp_path / "p.json")])
    assert res.exit_code == 0 and "why:" not in res.stdout
    lines = res.stdout.splitlines()
    assert lines[0] == "moeopt plan for 10b_moe: optimal"
    # whatever the machine's speed, a feasible status is explained on the next line
    fast = CliRunner().invoke(cli_main, ["solve", str(REPO / "instances" / "10b_moe.json"), "--gpus", "8",
                                         "--time-limit", "0.05", "--output", str(tmp_path / "q.json")])
    if fast.exit_code == 0 and fast.stdout.startswith("moeopt plan for 10b_moe: feasible"):
        assert fast.stdout.splitlines()[1].startswith("  why: ")


def test_units():
    assert si(790_900) == "791k" and si(2_268_600) == "2.27M" and si(35.4) == "35.4"
    assert duration(1.657) == "1.66 s" and duration(0.5778) == "578 ms" and duration(95.2e-6) == "95.2 us"
    assert duration(0) == "0 s"


def rows():
    """Three rows: two on the front, one missing TTFT."""
    base = {"num_gpus": 8, "tp": 1, "pp": 1, "dp": 8, "ep": 8, "etp": 1, "edp": 1, "micro_batches": 1,
            "throughput_tokens_per_ms": 21.6, "throughput_tokens_per_ms_per_gpu": 2.7, "ttft_s": 0.883,
            "tpot_ms": 6.52, "tokens_per_s_per_user": 1000 / 6.52, "max_memory_gb": 24.94,
            "load_imbalance": 0.0, "communication_ms": 361.1, "feasible": True, "misses": "none",
            "pareto": True, "proven": True}
    return pd.DataFrame([base,
                         {**base, "tp": 2, "dp": 4, "throughput_tokens_per_ms": 22.19,
                          "throughput_tokens_per_ms_per_gpu": 2.77, "ttft_s": 0.903},
                         {**base, "pp": 2, "dp": 4, "ttft_s": 12.0, "feasible": False, "misses": "ttft",
                          "pareto": False}])


def test_human_table_marks_rows_off_the_front():
    text = human_table(rows())
    header, first, second, third = text.splitlines()
    assert header.split() == ["GPUs", "TP", "PP", "DP", "EP", "ETP", "EDP", "mb", "throughput", "per", "GPU",
                              "TTFT", "TPOT", "per", "user", "memory", "imbalance", "comm./GPU", "meets",
                              "req.", "front", "proven"]
    # 21.6 tokens/ms = 21,600 tokens/s -> "21.6k"; 6.52 ms TPOT -> 1000 / 6.52 = 153 tokens/s per user
    assert "21.6k tok/s" in first and "883 ms" in first and "6.52 ms" in first and "153 tok/s" in first
    assert "24.9 GB" in first and "361 ms" in first and first.split()[-3:] == ["yes", "yes", "yes"]
    assert "no: misses ttft" in third and "12 s" in third


def test_top_lines_rank_front_rows_by_throughput_per_gpu():
    lines = top_lines(rows(), 5)
    # front rows only (the TTFT-missing one is out), the 2.77 tokens/ms/GPU one first
    assert lines[0] == "Top 2 by throughput per GPU (then TTFT), meeting every requirement"
    assert lines[1].startswith("  1. 8 GPUs, TP 2 PP 1 DP 4") and "2.77k tok/s per GPU (22.2k in all)" in lines[1]
    assert lines[2].startswith("  2. 8 GPUs, TP 1 PP 1 DP 8") and "TPOT 6.52 ms (153 tok/s per user)" in lines[2]
    assert top_lines(rows(), 1)[0].startswith("Top 1 ") and len(top_lines(rows(), 1)) == 2
    assert top_lines(rows().assign(pareto=False), 5) == ["Top: no deployment meets every requirement"]


def run_on_a_terminal(args: list[str]) -> str:
    """Everything ``args`` writes to a pseudo-terminal of 160 columns (stdout and stderr)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(args, stdout=slave, stderr=slave, cwd=REPO)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=300) == 0, out.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_on_a_terminal_only():
    """``pareto`` draws a bar over its configurations on a terminal; through pipes its
    output has no trace of it."""
    import subprocess
    import sys
    args = [sys.executable, "-c", "from optimizer.cli import main; main()", "pareto",
            "instances/mixtral_8x7b_bf16_h100.json", "--top", "0"]
    on_tty = run_on_a_terminal(args)
    assert "pareto: configurations" in on_tty and "%|" in on_tty
    piped = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert piped.returncode == 0 and "configurations" not in piped.stdout + piped.stderr
    assert piped.stderr == ""
    # the table is the same either way (the terminal turns \n into \r\n)
    assert piped.stdout.splitlines()[0] in on_tty.replace("\r\n", "\n")
