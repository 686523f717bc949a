"""Discrete-event simulation of a plan serving a workload (``moeopt simulate``): requests
arrive (Poisson, closed loop or a trace), are routed to the attention-DP replicas, and each
replica runs engine steps as vLLM and SGLang do (FCFS admission, chunked prefill, decode
first, recompute preemption when KV runs out). Step times come from
``optimizer.costs.step_time`` (the one cost function it shares with the planner); it never
imports the planner's queueing approximations (``optimizer.costs.serving``), so it checks
them independently. Imports ``inputs``, ``costs`` and ``plan``; never ortools or click.
"""
