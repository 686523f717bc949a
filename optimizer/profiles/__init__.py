"""Hardware profiles: the shipped JSON files (one per GPU preset, NAME.json) and the fitters
that write them: ``fit`` (a CSV of measured timings) and ``aiconfigurator`` (the measured
database shipped in the optional ``aiconfigurator-core`` package). The format and its lookup
are ``optimizer.costs.profile``; the fitters also use ``optimizer.costs.formulas`` (FLOPs and
bytes of each measured shape). docs/calibration.md documents both."""
