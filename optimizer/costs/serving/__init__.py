"""The serving model of a continuously batched service, in plain Python (no solver).

``queueing``: textbook queueing formulas (Little's law, Pollaczek-Khinchine M/G/1 mean wait,
M/D/1 and M/M/1, an exponential-tail percentile of the wait). ``knobs``: the admissible
per-replica serving knobs (running-request cap B, prefill chunk budget C, prefill and decode
micro-batch counts) of one configuration, limited by the KV cache and memory.
``service_types``: the model's inputs and outputs (request sizes, SLOs, a configuration's
step time, the predicted metrics). ``steady_state``: one queue's fixed point at a rate
(running decodes, prefill utilisation, the share of prompt steps, mean TPOT). ``metrics``:
for one knob tuple and one request rate, the predicted TTFT, TPOT, end-to-end latency,
utilisation and throughput, the sustainable rate and the goodput (bisection); ``routing``:
what least-loaded routing over outstanding requests gives it on several queues;
``ttft``: the TTFT figures of a steady state (the wait and a prompt's own steps by case);
``tpot``: the TPOT percentiles of a steady state (the spreads over a decode's life);
``own_steps``: a prompt's own steps beside the decodes of its replica;
``arrival_state``: what the replica a gated prompt joins is doing when it arrives;
``decode_life``: the prompt steps in one decoding request's life (the TPOT percentiles);
``prefill_backlog``: the prompt tokens a step leaves over its room (gated prompts);
``prompt_mix``: a prompt step's mean time over the law of the prompts it holds. The step time
of one engine step is an input (a callable), so the model is tested with known step times.
Disaggregated serving: ``disagg_decode`` (the decode pool's queue model and rate bound),
``disagg`` (prefill and decode pool candidates per replica, the KV transfer),
``disagg_search`` (every pool candidate within a GPU budget, dominance and bound pruning).
See docs/serving-model.md for the approximations and their sources.
"""
