"""A step whose first prompt chunk is a given prompt's (``Replica.lead_step_ns``) on a stored
pipeline plan (random_0_20 of the agreement benchmark: pp 4, 4 micro-batches): with fixed
lengths the mean prompt first is the mean view itself, and a longer prompt first fills the
first micro-batch, which sets a pipelined step."""

import json
from pathlib import Path

import pytest

from benchmarks.bench_service_agreement import random_instances
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import ServiceLoad
from optimizer.costs.serving.replica import service_load
from optimizer.inputs.schema import Instance
from optimizer.plan.service import KNOB_NAMES, plan_replica
from optimizer.simulate.deployment import structural_plan

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pipeline():
    case = random_instances(21, seed=0)[20]
    inst = Instance.model_validate(case.doc)
    doc = json.loads((REPO / "tests/costs/data/service_agreement" / f"{case.name}.plan.json").read_text())
    plan = structural_plan(inst, doc)
    spread = service_load(inst.workload)
    load = ServiceLoad(spread.prompt_tokens, spread.output_tokens)  # fixed lengths: no attention offset
    knobs = ServingKnobs(*(doc["serving"][k] for k in KNOB_NAMES))
    assert plan.deg.pp == 4 and knobs.prefill_micro_batches == knobs.decode_micro_batches == 4
    return plan_replica(inst, plan, load), knobs, load


def test_the_mean_prompt_first_is_the_mean_view(pipeline):
    rep, knobs, load = pipeline
    s, ctx = load.prompt_tokens, load.decode_context_tokens
    # whole prompts, a prompt and the start of the next one, a part of one prompt
    for chunk in (2 * s, s + 96, s // 2):
        for decodes in (0, 100):
            assert rep.lead_step_ns(knobs, s, chunk, decodes, ctx) == rep.step_ns(knobs, chunk, decodes, ctx)


def test_a_longer_prompt_first_sets_the_pipelined_step(pipeline):
    rep, knobs, load = pipeline
    s, ctx = load.prompt_tokens, load.decode_context_tokens
    chunk = 3 * s
    mean_view = rep.step_ns(knobs, chunk, 100, ctx)
    # the first micro-batch holds 2 s tokens instead of s: its stage times, which set the step
    # (max(m, p) of them), grow by more than half (the other micro-batches are unchanged)
    longer = rep.lead_step_ns(knobs, 2 * s, chunk, 100, ctx)
    assert longer > 1.5 * mean_view
    assert rep.lead_step_ns(knobs, 3 * s, chunk, 100, ctx) > longer
