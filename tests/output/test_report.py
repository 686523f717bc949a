"""``moeopt report`` (issue 8): one self-contained, readable HTML page per plan.

Plans: two solved ones (10b_moe on 64 and on 8 GPUs), a hand-written EP 8 plan (16 experts
over 8 ranks per layer, no ``gpus`` list) and DeepSeek-V3-size plans (256 experts, 64 GPUs in
8 nodes, EP 64 and EP 32) from ``benchmarks/bench_report.py``. Each test runs in its own
working directory, so ``results/`` lookups never see the repository's files.

The runtime/UX complaints are pinned here too: the page fits a 1400 px window (Chromium),
256-384 experts give a readable hot-expert view, uniform loads are a sentence, each value is
printed once, and memory is stated as the usable figure beside the raw capacity.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.image import imread

from optimizer.cli import main
from optimizer.cli.common import load_instance
from optimizer.costs.expert_loads import expert_loads
from optimizer.errors import InputError
from optimizer.inputs.schema import Instance
from optimizer.output import html as htmlreport
from optimizer.output.html.canvas import overlap

REPO = Path(__file__).resolve().parents[2]
from benchmarks import bench_report  # noqa: E402

INSTANCE = REPO / "instances" / "10b_moe.json"
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]*")
VOID = {"meta", "img", "br", "hr", "input", "link", "col", "source", "wbr", "area", "base"}
SWEEP_HEADER = ("num_gpus,tp,pp,dp,ep,etp,edp,micro_batches,throughput_tokens_per_ms,"
                "throughput_tokens_per_ms_per_gpu,ttft_s,max_memory_gb,load_imbalance,"
                "communication_ms,feasible,pareto,proven\n")


class Page(HTMLParser):
    """Tags, attributes, text and table rows of a page; nesting errors are collected."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.open: list[str] = []
        self.errors: list[str] = []
        self.rows: list[list[str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._caption: list[str] | None = None
        self._name, self._table_start = "", 0
        self.chunks: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)
        if tag == "caption":
            self._caption = []
        elif tag == "table":
            self.rows.append([])  # a separator: rows of one table follow each other
            self._table_start = len(self.rows)
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
            return
        self.open.pop()
        if tag == "caption" and self._caption is not None:
            self._name = "".join(self._caption).strip()
            self._caption = None
        elif tag == "table":
            self.tables[self._name] = self.rows[self._table_start:]
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.chunks.append(data)
        if self._caption is not None:
            self._caption.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.chunks)

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.tags if t == tag)

    def table(self, caption_start: str) -> list[list[str]]:
        """Rows (header first) of the table whose caption starts with ``caption_start``."""
        found = [rows for name, rows in self.tables.items() if name.startswith(caption_start)]
        assert len(found) == 1, (caption_start, list(self.tables))
        return found[0]


def run(args: list[str], code: int = 0):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def assert_self_contained(html_text: str, figures: int) -> Page:
    """Parses cleanly, embeds exactly ``figures`` PNG pictures, points at nothing outside."""
    page = Page(html_text)
    assert not page.errors and not page.open, (page.errors, page.open)
    imgs = [a for t, a in page.tags if t == "img"]
    assert page.count("figure") == len(imgs) + page.count("svg") == figures
    for attrs in imgs:
        assert attrs["src"].startswith("data:image/png;base64,")
        width, height = png_size(base64.b64decode(attrs["src"].split(",", 1)[1], validate=True))
        assert width >= 600 and height >= 150
        assert attrs.get("alt")
    assert page.count("link") == page.count("script") == page.count("iframe") == 0
    for _, attrs in page.tags:
        for name in ("src", "href", "srcset", "action", "poster", "data"):
            value = attrs.get(name)
            assert value is None or value.startswith(("data:image/png;base64,", "#")), (name, value)
    rest = DATA_URI.sub("", html_text)
    for needle in ("http:", "https:", "//", "url(", "@import"):
        assert needle not in rest, needle
    return page


def lookup(page: Page, caption: str, key: str) -> list[str]:
    """The row of table ``caption`` whose first cell is ``key``."""
    rows = [r for r in page.table(caption) if r and r[0] == key]
    assert len(rows) == 1, (caption, key)
    return rows[0]


def stated(value: object) -> str:
    """How the page states a plan value: numbers as JSON writes them, text as it is."""
    return json.dumps(value) if isinstance(value, (int, float)) else str(value)


def assert_states_plan(page: Page, doc: dict) -> None:
    """Degrees, metrics and the solver block appear exactly as plan.json writes them, once:
    no other cell of their row repeats the value (rounded or not)."""
    for key, value in doc["degrees"].items():
        assert lookup(page, "Parallel degrees", key)[1] == json.dumps(value)
    for caption, block in (("Metrics", doc.get("metrics", {})), ("Solver", doc.get("solver", {}))):
        for key, value in block.items():
            row = lookup(page, caption, key)
            assert row[1] == stated(value), key
            if isinstance(value, float) and value:
                assert not any(re.search(rf"(?<![0-9.]){re.escape(f'{value:.4g}')}(?![0-9])", c)
                               for c in row[2:]), row
    for key in ("num_gpus", "micro_batches"):
        assert lookup(page, "Plan", key)[1] == json.dumps(doc[key])


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Path]:
    """Solved plans on 64 and 8 GPUs, a hand-written EP 8 plan and DeepSeek-V3-size plans."""
    root = tmp_path_factory.mktemp("plans")
    run(["solve", str(INSTANCE), "--output", str(root / "p.json")])
    run(["solve", str(INSTANCE), "--gpus", "8", "--output", str(root / "p8.json")])
    loads = expert_loads(load_instance(str(INSTANCE)))
    ep8 = {"instance": "10b_moe", "num_gpus": 8, "degrees": {"tp": 1, "pp": 1, "dp": 8, "ep": 8},
           "micro_batches": 2,
           # rank r holds experts (r, 15 - r) of the load order: hot and cold paired
           "expert_placement": {str(layer): [sorted((order[r], order[15 - r])) for r in range(8)]
                                for layer, order in
                                ((x, sorted(range(16), key=lambda e: -loads[x][e])) for x in range(16))},
           "metrics": {"throughput_tokens_per_ms": 250.0, "ttft_s": 5.2}}
    (root / "ep8.json").write_text(json.dumps(ep8))
    (root / "dsv3.json").write_text(json.dumps(bench_report.deepseek_v3_instance()))
    (root / "dsv3_ep64.json").write_text(json.dumps(bench_report.deepseek_v3_plan(64)))
    (root / "dsv3_ep32_58.json").write_text(json.dumps(bench_report.deepseek_v3_plan(32, drop_dense=True)))
    return {p.stem: p for p in root.glob("*.json")}


def rank_load_ratios(doc: dict, inst_path: Path) -> list[list[float]]:
    """Per MoE layer of the plan, each EP rank's routed load / the mean rank load, from the
    instance's expert loads (a replicated expert's load split evenly over its copies)."""
    inst = load_instance(str(inst_path))
    loads = dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))
    out = []
    for layer, ranks in doc["expert_placement"].items():
        copies = {e: sum(e in r for r in ranks) for r in ranks for e in r}
        per_rank = [sum(loads[int(layer)][e] / copies[e] for e in r) for r in ranks]
        out.append([x / (sum(per_rank) / len(per_rank)) for x in per_rank])
    return out


def expected_figures(doc: dict, inst_path: Path | None, tables: int = 0) -> int:
    """Cluster map and memory; the placement map when EP > 1 and it is readable (at most 64
    experts, or the instance's uneven loads give the hot-expert view, or the ranks hold unequal
    counts); with an instance the load heat map (EP > 1, some rank off the mean by > 0.1 %) and
    the requirements."""
    ep = doc["degrees"]["ep"]
    placement = doc.get("expert_placement") or {}
    experts = 1 + max((e for ranks in placement.values() for r in ranks for e in r), default=-1)
    unequal_counts = len({len(r) for ranks in placement.values() for r in ranks}) > 1
    hot_view = False
    if inst_path is not None:
        inst = load_instance(str(inst_path))
        hot_view = any(max(row) - min(row) > 1e-3 * max(row) for row in expert_loads(inst))
    placement_drawn = ep > 1 and (experts <= 64 or hot_view or unequal_counts)
    loads_drawn = (inst_path is not None and ep > 1
                   and any(abs(x - 1) > 1e-3 for row in rank_load_ratios(doc, inst_path) for x in row))
    requirements_drawn = inst_path is not None
    return 2 + placement_drawn + loads_drawn + requirements_drawn + tables


def report(tmp_path: Path, plan: Path, *extra: str) -> str:
    """Run ``moeopt report PLAN EXTRA --output TMP/<plan>.html``; the page's text."""
    out = tmp_path / f"{plan.stem}.html"
    result = run(["report", str(plan), *extra, "--output", str(out)])
    assert result.stdout == f"report written to {out}\n"
    return out.read_text(encoding="utf-8")


def test_report_solved_plan_with_instance(plans, tmp_path, monkeypatch):
    """64-GPU plan + instance: every picture but the Pareto plot, exact numbers."""
    monkeypatch.chdir(tmp_path)
    text = report(tmp_path, plans["p"], "--instance", str(INSTANCE))
    doc = json.loads(plans["p"].read_text())
    page = assert_self_contained(text, figures=expected_figures(doc, INSTANCE))
    assert_states_plan(page, doc)
    inst = load_instance(str(INSTANCE))
    req = inst.requirements
    # each requirement sits in the row of the metric it judges, target from the instance
    assert lookup(page, "Metrics", "max_memory_gb")[3] == f"<= {inst.memory_limit_gb:g} GB: ok"
    assert lookup(page, "Metrics", "ttft_s")[3] == f"< {req.max_ttft_s:g} s: ok"
    throughput = ("throughput_tokens_per_ms_per_gpu" if req.throughput_scope == "per_gpu"
                  else "throughput_tokens_per_ms")
    assert lookup(page, "Metrics", throughput)[3].endswith(": ok")
    assert "Requirements" not in page.tables  # every requirement is in the metrics table
    assert page.table("Metrics")[0] == ["metric", "value", "check", "requirement"]
    assert doc["degrees"]["ep"] > 1 or "EP = 1: every GPU holds every expert" in page.text
    assert "No sweep or Pareto table found" in page.text
    assert lookup(page, "Metrics", "throughput_tokens_per_ms")[2] == "holds"  # recomputed == stated


@pytest.mark.slow
def test_report_without_instance_says_so(plans, tmp_path, monkeypatch):
    """No instance: the loads and requirements captions say --instance is needed."""
    monkeypatch.chdir(tmp_path)
    text = report(tmp_path, plans["p8"])
    doc = json.loads(plans["p8"].read_text())
    page = assert_self_contained(text, figures=expected_figures(doc, None))
    assert_states_plan(page, doc)
    assert "no instance given (--instance), so only the placement is shown" in page.text
    assert "requirements are in the instance: no instance given (--instance)" in page.text
    to_stdout = run(["report", str(plans["p8"]), "--output", "-"]).stdout
    assert to_stdout.startswith("<!DOCTYPE html>") and to_stdout.endswith("</html>\n")
    spans = [f"{s['layers'][0]}-{s['layers'][-1]}" if len(s["layers"]) > 1 else str(s["layers"][0])
             for s in doc["stages"]]
    assert page.table("Pipeline stages")[1:] == [[str(s["stage"]), span, str(len(s["layers"]))]
                                                 for s, span in zip(doc["stages"], spans)]


@pytest.mark.slow
def test_report_hand_written_ep8_plan(plans, tmp_path, monkeypatch):
    """EP 8 over 16 experts: placement map, per-layer table and balancedness from the loads."""
    monkeypatch.chdir(tmp_path)
    text = report(tmp_path, plans["ep8"], "--instance", str(INSTANCE))
    doc = json.loads(plans["ep8"].read_text())
    page = assert_self_contained(text, figures=expected_figures(doc, INSTANCE))
    assert_states_plan(page, doc)
    assert lookup(page, "Parallel degrees", "etp")[1] == "1 (derived)"
    ttft = lookup(page, "Metrics", "ttft_s")
    assert ttft[1] == "5.2" and re.fullmatch(r"differs: recomputed [0-9.]+", ttft[2])  # not 5.2 s
    placement = page.table("Experts held by each EP rank")
    assert placement[0] == ["MoE layer(s)", "EP rank", "experts"]
    assert placement[1:] == [[layer, str(r), ", ".join(map(str, experts))]  # one row per rank
                             for layer, ranks in doc["expert_placement"].items()
                             for r, experts in enumerate(ranks)]
    assert "the plan lists no GPUs: Megatron's default rank order is shown" in page.text
    assert re.search(r"balancedness mean 0\.\d{3}, worst 0\.\d{3} \(layer \d+\)", page.text)
    assert "The plan has no solver block" in page.text


@pytest.mark.slow
def test_default_output_and_pareto_plot(plans, tmp_path, monkeypatch):
    """Without --output: results/<instance>/report.html, with the sweep's Pareto plot."""
    monkeypatch.chdir(tmp_path)
    doc = json.loads(plans["p"].read_text())
    d, m = doc["degrees"], doc["metrics"]
    metrics = ("throughput_tokens_per_ms", "throughput_tokens_per_ms_per_gpu", "ttft_s", "max_memory_gb",
               "load_imbalance", "communication_ms")
    mine = ",".join(map(str, [doc["num_gpus"], *(d[k] for k in ("tp", "pp", "dp", "ep", "etp", "edp")),
                              doc["micro_batches"], *(m[k] for k in metrics), True, True, True])) + "\n"
    sweep = tmp_path / "results" / "10b_moe" / "sweep.csv"
    sweep.parent.mkdir(parents=True)
    sweep.write_text(SWEEP_HEADER + mine
                     + "8,1,2,4,1,1,4,8,252.06,31.5,5.2,60.7,0.0,3.37,True,True,True\n"
                     + "8,8,1,1,8,1,1,1,100.0,12.5,12.0,70.0,0.5,9.0,False,False,False\n")
    result = run(["report", str(plans["p"])])
    target = Path("results") / "10b_moe" / "report.html"
    assert result.stdout == f"report written to {target}\n"
    page = assert_self_contained(target.read_text(encoding="utf-8"), figures=expected_figures(doc, None, 1))
    assert "sweep.csv: 3 deployments, 2 on the Pareto front" in page.text
    assert "the star is this plan" in page.text


@pytest.mark.slow
def test_report_escapes_text_and_rejects_bad_input(plans, tmp_path, monkeypatch):
    """Text from files is escaped; bad plans exit 2 with one line naming the problem."""
    monkeypatch.chdir(tmp_path)
    doc = json.loads(plans["p8"].read_text())
    doc["status"] = "<script>alert(1)</script>"   # free text: printable, shown escaped
    doc["metrics"]["<b>odd</b>"] = "<i>x</i>"
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps(doc))
    out = tmp_path / "evil.html"
    run(["report", str(evil), "--output", str(out)])
    page = assert_self_contained(out.read_text(), figures=expected_figures(doc, None))
    assert page.count("script") == page.count("b") == page.count("i") == 0
    assert "<script>alert(1)</script>" in page.text
    assert lookup(page, "Metrics", "<b>odd</b>")[1:] == ["<i>x</i>"]
    # the plan's instance names a results folder: a ResultName, refused otherwise (one reader)
    doc["instance"] = "<script>alert(1)</script>"
    evil.write_text(json.dumps(doc))
    for args in ([], ["--output", str(tmp_path / "evil2.html")]):
        bad = run(["report", str(evil), *args], code=2)
        assert "instance=" in bad.stderr and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert not (tmp_path / "evil2.html").exists()
    cases = {"missing.json": None, "list.json": "[1, 2]", "degrees.json": '{"degrees": {"tp": "x"}}',
             "infeasible.json": '{"instance": "a", "status": "infeasible", "explanation": "too slow"}'}
    expected = {"missing.json": "no such file", "list.json": "expected a JSON object",
                "degrees.json": "degrees.tp", "infeasible.json": "no deployment to report (too slow)"}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_text(content)
        result = run(["report", name, "--output", "x.html"], code=2)
        assert expected[name] in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "x.html").exists()
    result = run(["report", str(plans["p8"]), "--output", str(tmp_path)], code=2)
    assert "is a directory" in result.stderr and len(result.stderr.splitlines()) == 1


def test_plan_that_does_not_fit_the_instance(plans, tmp_path, monkeypatch):
    """EP 3 does not divide 16 experts: still a report, with a note and no load picture."""
    monkeypatch.chdir(tmp_path)
    doc = {"instance": "10b_moe", "degrees": {"tp": 1, "pp": 1, "dp": 3, "ep": 3}}
    path = tmp_path / "ep3.json"
    path.write_text(json.dumps(doc))
    text = report(tmp_path, path, "--instance", str(INSTANCE))
    page = assert_self_contained(text, figures=1)  # the cluster map
    assert "the plan does not fit instance '10b_moe' (" in page.text
    assert lookup(page, "Requirements", "ep divides the experts")[-1] == "VIOLATED"


def overlaps(boxes) -> bool:
    return overlap(list(boxes), pad=0.0)


@pytest.mark.parametrize("plan, with_instance", [("dsv3_ep64", True), ("dsv3_ep32_58", False)])
@pytest.mark.slow
def test_deepseek_v3_size_report_is_readable_and_fast(plans, tmp_path, monkeypatch, plan, with_instance):
    """256 experts, 58+ MoE layers, 64 GPUs: written in <= 5 s, no two labels overlap; with the
    instance the placement is the hot-expert view (32 labelled columns), without it a sentence
    (every rank holds 8 experts)."""
    monkeypatch.chdir(tmp_path)
    doc = json.loads(plans[plan].read_text())
    inst = load_instance(str(plans["dsv3"])) if with_instance else None
    start = time.process_time()  # CPU seconds: robust to a busy machine (wall: bench_report.py)
    data = htmlreport.collect(inst, doc)
    pics = htmlreport.pictures(data)
    text = htmlreport.page_html(data, pics)  # renders every figure, thinning crowded labels
    assert time.process_time() - start <= 5.0
    page = assert_self_contained(text, figures=expected_figures(doc, plans["dsv3"] if with_instance else None))
    assert_states_plan(page, doc)
    assert f"({len(doc['expert_placement'])} MoE layers, EP {doc['degrees']['ep']})" in page.text
    for pic in pics:
        if pic.fig is None:
            continue
        renderer = pic.fig.canvas.get_renderer()  # holds the last drawing, the one embedded
        for boxes in htmlreport.tick_boxes(pic.fig):
            assert not overlaps(boxes), pic.anchor
        for ax in pic.fig.axes:
            assert not overlaps(t.get_window_extent(renderer) for t in ax.texts), pic.anchor
        if pic.anchor == "placement":  # 256 experts: the hot-expert view, 32 labelled columns
            assert len(pic.fig.axes[0].texts) == 32 * len(doc["expert_placement"])
            assert len(pic.fig.axes[0].get_xticklabels()) <= 32
        if pic.anchor == "cluster":
            assert len(pic.fig.axes[0].texts) == 64  # 64 GPUs still labelled


def test_very_large_cluster_collapses_into_heat_map(tmp_path):
    """512 GPUs on 64 nodes: no per-cell labels, thinned node labels that do not overlap."""
    doc = {"instance": "big", "degrees": {"tp": 1, "pp": 4, "dp": 128, "ep": 64},
           "expert_placement": {str(x): [[2 * r, 2 * r + 1] for r in range(64)] for x in range(8)}}
    data = htmlreport.collect(None, doc)
    pic = htmlreport.cluster_map(data)
    htmlreport.png_base64(pic.fig)
    assert not pic.fig.axes[0].texts and "too many to label" in pic.caption
    assert all(not overlaps(b) for b in htmlreport.tick_boxes(pic.fig))
    assert len(pic.fig.axes[0].get_yticklabels()) < 64


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
WINDOW_PX = 1400


def page_width_px(page_file: Path, tmp_path: Path) -> int:
    """document.documentElement.scrollWidth of the page in a WINDOW_PX wide Chromium window,
    read from --dump-dom of a copy with one measuring script (the report itself has none)."""
    probe = tmp_path / f"probe-{page_file.name}"
    script = ('<script>document.body.setAttribute("data-scroll-width", '
              "document.documentElement.scrollWidth)</script></body>")
    probe.write_text(page_file.read_text(encoding="utf-8").replace("</body>", script), encoding="utf-8")
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           f"--window-size={WINDOW_PX},1000", "--dump-dom", probe.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-scroll-width="([0-9]+)"', done.stdout)
    assert done.returncode == 0 and found, done.stderr[-2000:]
    return int(found.group(1))


@pytest.mark.slow  # ~20 s: three Chromium starts
@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get install "
                    "-y chromium); the browser test needs /usr/bin/chromium")
def test_report_renders_in_headless_chromium(plans, tmp_path, monkeypatch):
    """Headless Chromium, offline, screenshots the page: the picture is not blank; and every
    page, the 64-rank DeepSeek-V3-size one included, fits a 1400 px window (no sideways scroll)."""
    monkeypatch.chdir(tmp_path)
    report(tmp_path, plans["ep8"], "--instance", str(INSTANCE))
    page_file = tmp_path / "ep8.html"
    shot = tmp_path / "shot.png"
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1280,2000", page_file.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = imread(shot)  # (2000, 1280, 3 or 4) floats in [0, 1]
    assert pixels.shape[:2] == (2000, 1280)
    rgb = (pixels[:, :, :3] * 255).round().astype("uint8").reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 200  # text, tables and pictures, not a blank page
    assert (rgb != 255).any(axis=1).mean() > 0.1  # more than a tenth of the pixels are not white
    report(tmp_path, plans["dsv3_ep64"], "--instance", str(plans["dsv3"]))  # 64 EP ranks x 256 experts
    for name in ("ep8", "dsv3_ep64"):
        assert page_width_px(tmp_path / f"{name}.html", tmp_path) <= WINDOW_PX, name

def variant(tmp_path: Path, name: str, **changes) -> Path:
    """The 10b_moe instance with top-level fields replaced, written to TMP/<name>.json."""
    doc = json.loads(INSTANCE.read_text()) | changes
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def test_uniform_loads_are_said_not_drawn(plans, tmp_path):
    """Uniform expert loads: one sentence instead of a flat grey heat map; the same plan
    under the power-law loads still gets its heat map."""
    doc = json.loads(plans["ep8"].read_text())
    flat = load_instance(str(variant(tmp_path, "flat", expert_load={"kind": "uniform"})))
    pic = htmlreport.load_map(htmlreport.collect(flat, doc))
    assert pic.fig is None
    # 16 equal experts, 2 per rank: every rank gets 2/16 of the load = the mean, deviation 0
    assert pic.caption.startswith("Loads are uniform: in all 16 MoE layers every EP rank gets the "
                                  "mean routed load within 0.1% (largest deviation 0.00%)")
    skewed = htmlreport.load_map(htmlreport.collect(load_instance(str(INSTANCE)), doc))
    assert skewed.fig is not None and "balancedness mean" in skewed.caption


def test_memory_states_usable_figure_beside_raw_capacity(plans, tmp_path):
    """H200: 141 GiB = 151.398 GB HBM - 3.758 GB runtime reserve - 0.4 GB NCCL = 147.240 GB
    usable, the figure ``moeopt init`` prints; bars leave the 4.158 GB reserve out."""
    doc = json.loads(plans["p8"].read_text())
    h200 = variant(tmp_path, "h200", hardware={"preset": "h200-sxm", "num_gpus": 8},
                   requirements={"max_ttft_s": 10})
    pic = htmlreport.memory_bars(htmlreport.collect(load_instance(str(h200)), doc))
    assert ("against 147.2 GB usable per GPU: 151.398 GB HBM less the 4.16 GB reserve" in pic.caption)
    init = run(["init", "--model", str(REPO / "tests/fixtures/hf/mixtral_8x7b.json"), "--gpu", "h200-sxm",
                "--gpus", "8", "--output", str(tmp_path / "init.json")])
    assert "(147.2 GB usable each)" in init.stdout  # the same figure as moeopt init
    ax = pic.fig.axes[0]
    usable = [line.get_ydata()[0] for line in ax.get_lines() if line.get_label() == "usable"]
    assert usable == [pytest.approx(141 * 2**30 / 1e9 - 3.758 - 0.4)]
    tops = [max(y for _, y in path.vertices) for path in ax.collections[-1].get_paths()]
    stated = [sum(g["memory_gb"][k] for k in ("weights", "kv_cache", "activations", "buffers"))
              for g in doc["gpus"]]
    assert tops == pytest.approx([t - 4.158 for t in stated])  # the reserve is left out
    # a 100 GB requirement on the same GPU: 100 - 4.158 = 95.842 usable, raw HBM beside it
    capped = variant(tmp_path, "capped", hardware={"preset": "h200-sxm", "num_gpus": 8},
                     requirements={"max_memory_gb": 100})
    pic = htmlreport.memory_bars(htmlreport.collect(load_instance(str(capped)), doc))
    assert "against 95.8 GB usable per GPU: the 100 GB limit (raw HBM 151.398 GB) less" in pic.caption
    assert "HBM capacity" in [line.get_label() for line in pic.fig.axes[0].get_lines()]


def test_requirement_panels_print_no_numbers(plans):
    """Values and targets are printed once, in the metrics table: the panels carry none."""
    doc = json.loads(plans["ep8"].read_text())
    pic = htmlreport.requirement_bars(htmlreport.collect(load_instance(str(INSTANCE)), doc))
    assert pic.fig is not None
    for ax in pic.fig.axes:
        assert not ax.texts and not re.search(r"[0-9]", ax.get_title())


def expert_instance(num_experts: int) -> Instance:
    """The DeepSeek-V3-size instance of bench_report with ``num_experts`` experts."""
    doc = bench_report.deepseek_v3_instance()
    doc["model"]["num_experts"] = num_experts
    return Instance.model_validate(doc)


@pytest.mark.parametrize("num_experts", [256, 384])
@pytest.mark.slow
def test_hot_expert_view_is_readable_and_right(num_experts):
    """256 and 384 experts, EP 64: 32 columns (each layer's hottest experts, hottest first),
    each cell the EP rank holding that expert, recomputed here from loads and placement."""
    inst = expert_instance(num_experts)
    loads = dict(zip(inst.model.moe_layer_ids, expert_loads(inst)))
    # rank r holds experts r, r + 64, r + 128, ... (round robin, no replicas)
    doc = {"instance": inst.name, "degrees": {"tp": 1, "pp": 1, "dp": 64, "ep": 64},
           "expert_placement": {str(x): [list(range(r, num_experts, 64)) for r in range(64)]
                                for x in loads}}
    pic = htmlreport.placement_map(htmlreport.collect(inst, doc))
    htmlreport.png_base64(pic.fig)
    ax = pic.fig.axes[0]
    expected = [[e % 64 for e in sorted(range(num_experts), key=lambda e: (-row[e], e))[:32]]
                for row in loads.values()]
    assert np.asarray(ax.images[0].get_array()).tolist() == expected
    assert [t.get_text() for t in ax.texts] == [str(r) for row in expected for r in row]
    assert f"32 most loaded of the {num_experts} experts" in pic.caption
    renderer = pic.fig.canvas.get_renderer()
    assert not overlaps(t.get_window_extent(renderer) for t in ax.texts)
    assert all(not overlaps(b) for b in htmlreport.tick_boxes(pic.fig))
    assert min(t.get_fontsize() for t in ax.texts) >= 5.0


def test_many_experts_without_loads_count_per_rank():
    """Without loads: equal counts are a sentence (256 / 32 = 8 per rank); unequal counts
    (rank 0 also holds a replica of expert 9) are refused as every command refuses them."""
    doc = {"instance": "x", "degrees": {"tp": 1, "pp": 1, "dp": 32, "ep": 32},
           "expert_placement": {str(x): [list(range(8 * r, 8 * r + 8)) for r in range(32)]
                                for x in range(4)}}
    pic = htmlreport.placement_map(htmlreport.collect(None, doc))
    assert pic.fig is None
    assert pic.caption.startswith("Every EP rank holds 8 of the 256 experts in each of the 4 MoE layers")
    # unequal slot counts per rank break the plan-file contract (rule 3 of docs/plan-file.md):
    # the one plan reader refuses them in the report as in check and export
    doc["expert_placement"]["2"][0].append(9)
    with pytest.raises(InputError, match=r"expert_placement\[2\]: EP ranks hold \[8, 9\] slots"):
        htmlreport.collect(None, doc)
