"""What moeopt writes for people and runtimes: readable text of plans and checks, matplotlib
pictures, the self-contained HTML report, and the exports each runtime launches. Reshapes
figures that ``plan.evaluate`` computed; computes none of its own. Imports ``inputs``, ``costs``
and ``plan``; never ortools or click.
"""
