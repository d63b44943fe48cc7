"""The errors bad input raises: :class:`InputError`, and :class:`DataError` naming the file and line of the fault."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Something a user gave llmret is wrong: a setting, an argument, a name, a file. The command line
    reports it in one line; any other exception is a fault of llmret's and keeps its traceback."""


class DataError(InputError):
    """Malformed or inconsistent input.

    Carries the path and the 1-based line so that a user can open the file at the faulty spot; the
    message reads ``path:line: problem`` like a compiler's.
    """

    def __init__(self, path: str | Path | None, line: int | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.problem = problem
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {problem}")
