"""Expected outcomes that end a command with a clear one-line message and an exit code."""

from __future__ import annotations


class MoeoptError(Exception):
    """Base of the expected failures; ``exit_code`` follows the interface contract."""

    exit_code = 1


class InputError(MoeoptError):
    """Bad usage or invalid input: names the field, the value and the rule (exit 2)."""

    exit_code = 2


class InfeasibleError(MoeoptError):
    """Proven infeasible, or a checked plan violates a constraint (exit 3)."""

    exit_code = 3

    def __init__(self, message: str, payload: dict | None = None):
        super().__init__(message)
        self.payload = payload or {}


class NoSolutionError(MoeoptError):
    """The time limit passed with no feasible plan (exit 4)."""

    exit_code = 4

    def __init__(self, message: str, payload: dict | None = None):
        super().__init__(message)
        self.payload = payload or {}
