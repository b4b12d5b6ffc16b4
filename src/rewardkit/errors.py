"""Exceptions for everything a user controls: each message says what to change."""

from __future__ import annotations


class RewardkitError(Exception):
    """Base class: an error caused by user input or configuration (exit code 2 in the CLI)."""


class InputError(RewardkitError):
    """A record of user data is malformed.

    Args:
        message: what is wrong and what was expected.
        source: the file name (or ``<stdin>``, ``request``) the record came from.
        line: 1-based line (JSONL) or row (Parquet) number, if known.
        field: dotted/indexed path of the offending field, e.g. ``messages[2].role``.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        super().__init__(self.describe())

    def locate(self, *, source: str | None = None, line: int | None = None) -> InputError:
        """Returns a copy with the record's location filled in (keeps what is already set)."""
        return InputError(
            self.message,
            source=self.source or source,
            line=self.line if self.line is not None else line,
            field=self.field,
        )

    def describe(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        if self.field:
            where = f"{where}: field '{self.field}'" if where else f"field '{self.field}'"
        return f"{where}: {self.message}" if where else self.message


class ModelError(RewardkitError):
    """A model or tokenizer cannot be used as a reward model as configured."""


class ConfigError(RewardkitError):
    """An option value is invalid; the message names the option."""
