"""Errors that name where the problem is and what was expected."""

from __future__ import annotations

from dataclasses import dataclass

from connectors.base import LedgerflowError


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in a user's file, printed as ``file:line:col: message``."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


# LedgerflowError (the base class: the message is meant for the person running ledgerflow) is defined
# with the connector contract, so connectors raise it without importing the runner.
__all__ = ["Problem", "LedgerflowError", "SpecError", "EventError", "RenderError"]


class SpecError(LedgerflowError):
    """A flow, mapping or project file is wrong; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


class EventError(LedgerflowError):
    """An event (file or webhook body) cannot be used."""


class RenderError(LedgerflowError):
    """A template failed while rendering one event; names the file, line and field."""

    def __init__(self, message: str, problem: Problem | None = None):
        self.problem = problem
        super().__init__(str(problem) if problem else message)
