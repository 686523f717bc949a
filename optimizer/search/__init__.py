"""Searches over many solves: the Pareto set of one instance, sweeps over GPU counts (run
locally or on Ray), and ``size``, the fewest GPUs serving a request rate. Imports ``inputs``,
``costs``, ``plan``, ``cpsat`` and ``output.plots``; owns pandas tables of results.
"""
