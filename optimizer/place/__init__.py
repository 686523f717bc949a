"""Expert placement for measured loads (``moeopt place``): the problem statement, the fast
heuristic (greedy, descent, local search) and the exact CP-SAT model per layer. Imports
``optimizer.errors`` and ortools only, so it can serve a runtime's rebalancer on its own.
"""
