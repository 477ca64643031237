"""What a flow test is made of, and what running one yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core.errors import Problem
from runner.language.yamlsrc import Document


@dataclass
class ExpectedOp:
    """One expected operation: the route that fires and, optionally, its payload."""

    route: str
    path: tuple                       # where this item is in the test file
    match: str = "subset"             # subset | exact
    payload: dict[str, Any] | None = None
    idempotency_key: str | None = None

    @property
    def exact(self) -> bool:
        return self.match == "exact"


@dataclass
class Case:
    name: str
    file: str                         # the test file as shown to the user
    source: Path                      # the test file on disk
    doc: Document
    path: tuple                       # ("cases", i) in a test file, ("tests", i) in a flow file
    flow: Any = None                  # runner.language.spec.Flow once resolved
    event: dict[str, Any] | None = None
    lookups: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    error: str | None = None          # planning must fail with a message containing this
    expect: list[ExpectedOp] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def line(self) -> int:
        return self.doc.where(self.path)[0]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def problem(self, sub: tuple, message: str) -> Problem:
        return self.doc.problem(self.path + sub, message)


@dataclass
class FieldDiff:
    """One payload field that differs, and the mapping line that produced it."""

    path: tuple
    expected: Any                     # MISSING: produced but not expected (exact match)
    actual: Any                       # MISSING: expected but not produced
    source: tuple[str, int, int] | None = None


@dataclass
class OpFailure:
    """What is wrong with one expected or produced operation."""

    route: str
    message: str
    target: str = ""                  # connection and action, e.g. csv.qbo_bank_row
    diffs: list[FieldDiff] = field(default_factory=list)


@dataclass
class Result:
    case: Case
    status: str                       # pass | fail | error
    failures: list[OpFailure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    operations: list[Any] = field(default_factory=list)   # runner.language.planner.Operation
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "pass"


@dataclass
class TestFile:
    """A file that holds cases; ``problems`` are file-level (YAML, top-level shape)."""

    file: str
    source: Path
    cases: list[Case] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    inline: bool = False              # a flow file's own tests: section

    __test__ = False                  # not a pytest class
