"""``moeopt report`` of a disaggregated plan: both pools (per pool degrees, replicas, GPUs,
first ranks and one replica's pictures), a deployment map, and the KV transfer as the plan
states it with its link checked against the layout rule."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from click.testing import CliRunner

from optimizer.cli import main
from tests.output.test_report import DATA_URI, Page

REPO = Path(__file__).resolve().parents[2]


def _replica(tp: int, dp: int, ep: int) -> dict:
    return {"degrees": {"tp": tp, "pp": 1, "dp": dp, "ep": ep, "etp": 1},
            "num_gpus": tp * dp, "num_experts": 128, "stages": [{"stage": 0, "layers": list(range(48))}],
            "serving": {"max_running_requests": 64, "prefill_chunk_tokens": 4096,
                        "prefill_micro_batches": 1, "decode_micro_batches": 1}}


def disagg_doc(link: str = "inter_node") -> dict:
    """Qwen3-30B-A3B: 3 prefill replicas of 2 GPUs (TP 1 x DP 2, EP 2) and 1 decode replica of
    8 GPUs (DP 8, EP 8): 14 GPUs on 2 nodes. Layout (decreasing size): decode at 0..7, then
    prefill at 8, 10, 12. Transfer of a 4,000-token prompt: 48 layers x 4,000 x 2,048 B =
    393,216,000 B over min(2, 8) = 2 links of 50 GB/s + 10 us = 3.94336 ms."""
    return {"schema_version": 1, "instance": "qwen3_30b_a3b_h200_service", "status": "feasible",
            "mode": "disagg", "num_gpus": 14,
            "pools": [{"role": "prefill", "replicas": 3, **_replica(1, 2, 2)},
                      {"role": "decode", "replicas": 1, **_replica(1, 8, 8)}],
            "transfer": {"link": link, "links": 2, "kv_bytes_per_request": 393216000, "transfer_s": 0.00394336},
            "metrics": {"ttft_p90_s": 0.31, "tpot_p90_ms": 21.5, "goodput_rps": 30.0}}


def service_instance(tmp_path: Path) -> Path:
    doc = json.loads((REPO / "instances" / "qwen3_30b_a3b_h200_service.json").read_text())
    doc["hardware"]["num_gpus"] = 16
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(doc))
    return path


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(doc))
    return path


def test_report_of_a_disagg_plan_shows_both_pools_and_the_transfer(tmp_path):
    plan, inst, out = write(tmp_path, disagg_doc()), service_instance(tmp_path), tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", str(plan), "--instance", str(inst), "--output", str(out)])
    assert res.exit_code == 0, res.output  # a service instance is accepted for a disagg plan
    page = Page(out.read_text())
    assert not page.errors
    pools = page.table("Pools")
    assert pools[0][:11] == ["pool", "replicas", "GPUs/replica", "GPUs", "first ranks", "tp", "pp", "dp",
                             "ep", "etp", "edp"]
    assert pools[1][:11] == ["prefill", "3", "2", "6", "8, 10, 12", "1", "1", "2", "2", "1", "1"]
    assert pools[2][:11] == ["decode", "1", "8", "8", "0", "1", "1", "8", "8", "1", "1"]
    transfer = {row[0]: row[1:] for row in page.table("KV transfer")[1:]}
    assert transfer["link"] == ["inter_node", "inter_node", "holds"]  # 14 GPUs > 8 per node
    assert transfer["links"] == ["2", "2", "holds"]  # min(2, 8) GPUs
    assert transfer["kv_bytes_per_request"][0] == "393216000" and transfer["transfer_s"][0] == "0.00394336"
    assert {row[0]: row[1] for row in page.table("Plan")[1:]}["nodes"] == "2"
    assert {row[0]: row[1] for row in page.table("Metrics")[1:]}["tpot_p90_ms"] == "21.5"
    # the deployment map, then per pool: cluster map, placement, memory, routed loads
    headings = [a["id"] for t, a in page.tags if t == "h2"]
    assert headings == ["deployment", "prefill", "prefill-cluster", "prefill-placement", "prefill-memory",
                        "prefill-loads", "decode", "decode-cluster", "decode-placement", "decode-memory",
                        "decode-loads"]
    assert len(DATA_URI.findall(out.read_text())) == 3  # deployment map and each pool's cluster map
    assert "GPU table (2 GPUs)" in page.text and "GPU table (8 GPUs)" in page.text  # one replica each


def test_report_flags_a_stated_link_the_layout_contradicts(tmp_path):
    res = CliRunner().invoke(main, ["report", str(write(tmp_path, disagg_doc(link="intra_node"))),
                                    "--output", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    page = Page((tmp_path / "r.html").read_text())
    link = {row[0]: row[1:] for row in page.table("KV transfer")[1:]}["link"]
    assert link == ["intra_node", "inter_node", "differs: the layout gives inter_node"]
    assert {row[0]: row[1:] for row in page.table("KV transfer")[1:]}["links"] == ["2", "2", "holds"]
    assert "no instance given" in page.text


def test_report_of_a_disagg_plan_without_transfer_block_says_so(tmp_path):
    doc = disagg_doc()
    del doc["transfer"], doc["metrics"]
    res = CliRunner().invoke(main, ["report", str(write(tmp_path, doc)), "--output", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    text = Page((tmp_path / "r.html").read_text()).text
    assert "states no transfer block" in text and "The plan states no metrics." in text


def test_broken_disagg_plan_is_one_line_exit_2(tmp_path):
    doc = copy.deepcopy(disagg_doc())
    doc["pools"][1]["role"] = "prefill"
    res = CliRunner().invoke(main, ["report", str(write(tmp_path, doc)), "--output", str(tmp_path / "r.html")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "pools[1].role='prefill'" in lines[0], res.output
    assert not (tmp_path / "r.html").exists()
