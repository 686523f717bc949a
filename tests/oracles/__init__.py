"""Reference oracles the tests (and benchmarks) check moeopt against, written independently of
the planner's search: ``bruteforce`` enumerates every configuration, split and placement;
``eplb_greedy`` is the EPLB-style greedy placement baseline; ``fuzzkit`` makes hostile and
random inputs for every command and checks the exit-code contract.
"""
