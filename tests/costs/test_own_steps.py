"""A prompt's own steps (``serving.own_steps.OwnSteps``) worked by hand on a linear step time."""

import numpy as np
import pytest

from optimizer.costs.serving.knobs import ServingKnobs
from optimizer.costs.serving.own_steps import OwnSteps
from optimizer.costs.serving.service_types import Replica, ServiceLoad
from optimizer.costs.serving.steady_state import Steady


def _linear_step_ns(knobs, chunk, decodes, ctx):
    """5 us + 1 us per prompt token + 0.1 us per decode (ns)."""
    return 5_000 + 1_000 * chunk + 100 * decodes


def _lead_step_ns(knobs, prompt, chunk, decodes, ctx):
    """As ``_linear_step_ns``, plus the own chunk's attention: 0.01 ns per token of chunk x prompt."""
    return _linear_step_ns(knobs, chunk, decodes, ctx) + chunk * prompt // 100


def _steady(joined: float) -> Steady:
    return Steady(running=joined, joined=joined, rho=0.5, shared=0.1, seen=joined, full_ns=0.0, decode_ns=0.0,
                  with_prompt_ns=0.0, tpot_s=0.01, chunk_tokens=1024 - joined)


KNOBS = ServingKnobs(max_running_requests=64, prefill_chunk_tokens=1024, prefill_micro_batches=1,
                     decode_micro_batches=1)
LOAD = ServiceLoad(prompt_tokens=300, output_tokens=50)


def test_prompt_alone_in_one_step():
    # 4 decodes, a 300-token prompt alone in its step (step_tokens = 300: no others):
    # ahead = 300 < room 1020 -> no whole step; its last step holds 300 tokens, on the grid of
    # 1024 / 8 = 128 tokens: 300 / 128 = 2.34375 cells, linear between 256 and 384 tokens:
    # step(256) = 5000 + 256000 + 400 = 261,400 ns, step(384) = 389,400 ns,
    # 261,400 + 0.34375 x 128,000 = 305,400 ns
    own = OwnSteps(Replica(_linear_step_ns, queues=1, gpus=1), KNOBS, LOAD, _steady(4.0), 1.0, 0.0)
    assert own(4.0, (300,), 300) == pytest.approx(np.array([305_400e-9]), rel=1e-12)


def test_others_half_ahead_and_a_prompt_longer_than_the_room():
    # step_tokens 700 with a 300-token prompt: 400 others, 200 ahead and 200 behind. A
    # 1,000-token prompt at 24 decodes (room 1000): ahead = 200 + 1000 = 1200 -> one whole
    # step of 1,000 tokens (step(1024 tokens capped at the room 1000 by the decodes) =
    # 5000 + 1,000,000 + 2400 = 1,007,400 ns) and a last step of 1200 - 1000 + 200 = 400
    # tokens: 400 / 128 = 3.125 cells, step(384) = 5000 + 384,000 + 2400 = 391,400,
    # step(512) = 519,400: 391,400 + 0.125 x 128,000 = 407,400 ns; total 1,414,800 ns
    own = OwnSteps(Replica(_linear_step_ns, queues=1, gpus=1), KNOBS, LOAD, _steady(24.0), 1.0, 0.0)
    assert own(24.0, (1000,), 700) == pytest.approx(np.array([1_414_800e-9]), rel=1e-12)


def test_rest_of_a_decode_step_under_way_is_added_when_the_wait_leaves_it_out():
    # rest_share 0.6 at 4 decodes: 0.6 x step(0 prompt tokens, 4 decodes) / 2 =
    # 0.6 x 5,400 / 2 = 1,620 ns on top of the 305,400 ns of the first test
    own = OwnSteps(Replica(_linear_step_ns, queues=1, gpus=1), KNOBS, LOAD, _steady(4.0), 1.0, 0.6)
    assert own(4.0, (300,), 300) == pytest.approx(np.array([307_020e-9]), rel=1e-12)


def test_the_own_first_chunk_adds_its_attention_at_its_own_length():
    # lead_ref: 4 decodes rounded to a power of two = 4. A 300-token prompt alone: its last
    # step is interpolated between 256 and 384 tokens, each with its lead chunk's extra
    # (256 x 300 // 100 = 768 ns, 384 x 300 // 100 = 1,152 ns): 768 + 0.34375 x 384 = 900 ns
    # over the 305,400 ns of the first test, 306,300 ns
    rep = Replica(_linear_step_ns, queues=1, gpus=1, lead_step_ns=_lead_step_ns)
    own = OwnSteps(rep, KNOBS, LOAD, _steady(4.0), 1.0, 0.0)
    assert own(4.0, (300,), 300) == pytest.approx(np.array([306_300e-9]), rel=1e-12)


def test_a_pipelined_prompt_step_is_costed_over_its_first_chunks_prompt():
    # 2 micro-batches (pipelined): each equally likely lead prompt's step, its chunk first,
    # beside the mean 500 prompt tokens (at least its own), at 4 decodes:
    # lead 300: chunk 500: 5000 + 500,000 + 400 + 500 x 300 // 100 = 506,900 ns;
    # lead 900: chunk 900 (its own, more than the mean): 5000 + 900,000 + 400 + 8,100 = 913,500 ns
    knobs = ServingKnobs(max_running_requests=64, prefill_chunk_tokens=1024, prefill_micro_batches=2,
                         decode_micro_batches=2)
    rep = Replica(_linear_step_ns, queues=1, gpus=1, lead_step_ns=_lead_step_ns)
    own = OwnSteps(rep, knobs, LOAD, _steady(4.0), 1.0, 0.0)
    steps, probs = own.lead_law(4.0, (300, 900), 500.0, 1020.0)
    assert steps == pytest.approx(np.array([506_900e-9, 913_500e-9]), rel=1e-12)
    assert probs.tolist() == [0.5, 0.5]


def test_left_over_tokens_are_ahead_of_the_prompt():
    # 4 decodes (room 1020), a 300-token prompt alone in its step, 0 or 800 left-over tokens
    # ahead of it. None: the 305,400 ns of the first test. 800: ahead = 800 + 300 = 1100 >
    # 1020 -> one whole step (step(1020 tokens) = 5000 + 1,020,000 + 400 = 1,025,400 ns) and a
    # last step of 1100 - 1020 = 80 tokens: 80 / 128 = 0.625 cells between step(0) = 5,400
    # and step(128) = 133,400: 5,400 + 0.625 x 128,000 = 85,400 ns; total 1,110,800 ns
    own = OwnSteps(Replica(_linear_step_ns, queues=1, gpus=1), KNOBS, LOAD, _steady(4.0), 1.0, 0.0)
    got = own(4.0, (300,), 300, np.array([0.0, 800.0]))
    assert got.shape == (1, 2)
    assert got[0] == pytest.approx(np.array([305_400e-9, 1_110_800e-9]), rel=1e-12)
