"""Searches over many solves: the Pareto set of one instance and sweeps over GPU counts, run
locally or on Ray. Imports ``inputs``, ``costs``, ``plan``, ``cpsat`` and ``output.plots``; owns
pandas tables of results.
"""
