"""The one family of errors cnnlab raises on purpose, and the Problem they carry.

Every error a user can cause or fix (a bad spec or config, missing data, an unreadable run
store, a checkpoint that does not load) is a `CnnlabError`. Pages and the command line catch
this base, show `problems` (each naming the field, what is wrong and a fix) and carry on;
anything else that escapes is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with user input: which field, what is wrong, how to fix it."""

    field: str
    message: str
    fix: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        return f"{self.severity}: {self.field}: {self.message}. Fix: {self.fix}."


class CnnlabError(Exception):
    """Base of cnnlab's errors. `problems` lists what is wrong, field by field, where the error
    knows fields; otherwise it is empty and the message says it all."""

    def __init__(self, message: str = "", problems: list[Problem] | None = None) -> None:
        self.problems: list[Problem] = list(problems or [])
        super().__init__(message or "\n".join(str(p) for p in self.problems))


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def warnings(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "warning"]
