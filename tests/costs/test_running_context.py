"""The decodes' context in the aggregated model's steps is length-biased in the outputs
(``ServiceLoad.running_context_tokens``, docs/serving-model.md "The step time"): checked by
hand, against an enumeration of every decode step, and in what the model costs."""

import numpy as np

from optimizer.costs.serving.disagg import decode_queue
from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.metrics import Replica, ServiceLoad, predict

MS = 1_000_000  # ns
KNOBS = ServingKnobs(256, 2048, 1, 1)


def _enumerated_context(prompt: int, outputs) -> float:
    """Mean context over every decode step of equally likely requests: a request of D' tokens
    decodes D' - 1 steps, holding its prompt and j = 1 .. D' - 1 generated tokens."""
    steps = [prompt + j for d in outputs for j in range(1, d)]
    return float(np.mean(steps))


def test_two_output_lengths_by_hand():
    # outputs 100 and 300, equally likely: D = 200, E[D'^2] = (10,000 + 90,000) / 2 = 50,000,
    # cv^2 = 50,000 / 200^2 - 1 = 0.25; s + floor((200 * 1.25 + 1) / 2) = 1,000 + floor(125.5)
    load = ServiceLoad(1000, 200, output_points=(100, 300))
    assert load.running_context_tokens == 1125
    # every decode step: (1 + ... + 99) + (1 + ... + 299) = 4,950 + 44,850 = 49,800 generated
    # tokens over 99 + 299 = 398 steps, 125.13 on average (the old mean view: 100)
    assert abs(_enumerated_context(1000, (100, 300)) - 1125.13) < 0.01
    assert load.decode_context_tokens == 1000 + 100


def test_one_output_length_keeps_the_old_context():
    for output in (1, 2, 99, 100):
        load = ServiceLoad(512, output)
        assert load.running_context_tokens == load.decode_context_tokens == 512 + (output + 1) // 2


def test_against_every_decode_step_of_spread_outputs():
    # 32 equally likely points of an exponential of mean 300 (the workload's own kind of
    # points): within one token of the enumeration, and about D / 2 above the old view
    rng = np.random.default_rng(3)
    draws = np.minimum(np.ceil(rng.exponential(300.0, 200_000)), 1200)
    points = tuple(int(v) for v in np.percentile(draws, (np.arange(32) + 0.5) / 32 * 100, method="inverted_cdf"))
    load = ServiceLoad(700, round(float(np.mean(points))), output_points=points)
    assert abs(load.running_context_tokens - _enumerated_context(700, points)) <= 1.0
    assert load.running_context_tokens - load.decode_context_tokens > 0.35 * load.output_tokens


def test_the_aggregated_model_costs_its_decodes_at_the_running_context():
    load = ServiceLoad(600, 200, output_points=(100, 300))
    contexts = set()

    def step(knobs, chunk, decodes, context):
        if decodes:
            contexts.add(context)
        return 10 * MS + 10_000 * (chunk + decodes) + 10 * decodes * context

    m = predict(Replica(step, queues=1, gpus=1), KNOBS, load, 2.0)
    assert m.stable
    assert contexts == {load.running_context_tokens} == {725}
    # the disaggregated decode pool keeps the mean view s + (D + 1) / 2
    contexts.clear()
    decode_queue(Replica(step, queues=1, gpus=1), KNOBS, load).step_ns(8)
    assert contexts == {load.decode_context_tokens} == {700}
