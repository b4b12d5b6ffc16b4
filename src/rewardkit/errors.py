"""Exceptions for everything a user controls: each message says what to change."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


class RewardkitError(Exception):
    """Base class: an error caused by user input or configuration (exit code 2 in the CLI)."""


class InputError(RewardkitError):
    """A record of user data is malformed.

    One InputError may report several problems of the same record (`InputError.combine`): its
    ``field`` and the start of its ``message`` are the first problem's, the message goes on to list
    the others (``...; field 'b': ...``), and ``errors`` holds each one on its own.

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
        self._parts: tuple[InputError, ...] = ()
        super().__init__(self.describe())

    @property
    def errors(self) -> tuple[InputError, ...]:
        """Every problem this error reports, one InputError each (just itself for one problem)."""
        return self._parts or (self,)

    @classmethod
    def combine(cls, errors: Sequence[InputError]) -> InputError:
        """One error that reports all of ``errors`` (problems of the same record)."""
        parts = tuple(p for e in errors for p in e.errors)
        if not parts:
            raise ValueError("combine() needs at least one error")
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        rest = "; ".join(f"field '{p.field}': {p.message}" if p.field else p.message for p in parts[1:])
        combined = cls(f"{first.message}; {rest}", source=first.source, line=first.line, field=first.field)
        combined._parts = parts
        return combined

    def locate(self, *, source: str | None = None, line: int | None = None) -> InputError:
        """Returns a copy with the record's location filled in (keeps what is already set)."""
        if self._parts:
            return InputError.combine([p.locate(source=source, line=line) for p in self._parts])
        return InputError(
            self.message,
            source=self.source or source,
            line=self.line if self.line is not None else line,
            field=self.field,
        )

    def under(self, prefix: str) -> InputError:
        """The same error for a record nested at ``prefix`` (e.g. ``[3]``): fields become
        ``[3].messages[1].role``, or ``[3]`` for an error about the record as a whole."""
        if self._parts:
            return InputError.combine([p.under(prefix) for p in self._parts])
        field = f"{prefix}.{self.field}" if self.field else prefix
        return InputError(self.message, source=self.source, line=self.line, field=field)

    def describe(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        if self.field:
            where = f"{where}: field '{self.field}'" if where else f"field '{self.field}'"
        return f"{where}: {self.message}" if where else self.message


class InputErrors:
    """Collects the problems of one record so that all of them are reported, not only the first:
    run each independent check through `check`, then `raise_if_any` raises one InputError that
    lists them all (`InputError.combine`).
    """

    def __init__(self) -> None:
        self.errors: list[InputError] = []

    def check(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T | None:
        """``fn(*args, **kwargs)``, or None after recording the InputError it raised."""
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            self.errors.append(e)
            return None

    def raise_if_any(self) -> None:
        if self.errors:
            raise InputError.combine(self.errors)


class ModelError(RewardkitError):
    """A model or tokenizer cannot be used as a reward model as configured."""


class ConfigError(RewardkitError):
    """An option value is invalid; the message names the option."""
