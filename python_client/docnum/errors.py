"""Exceptions raised by the docnum client, one per SQLSTATE of the SQL contract (docs/sql-api.md).

The database decides what went wrong and says so with a five-character SQLSTATE (``NB001``...); this
module only gives each code a Python class.  :func:`translate` is the single mapping, and
:func:`translated` is the single place that applies it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import psycopg

__all__ = [
    "ERRORS",
    "ConfigNotFound",
    "DocnumError",
    "DuplicateNumber",
    "InstallNotPermitted",
    "InvalidArgument",
    "InvalidStateTransition",
    "LockTimeout",
    "ManualOverrideNotAllowed",
    "NumberNotFound",
    "NumberingUnavailable",
    "RequestKeyReused",
    "ReservationExpired",
    "SequenceExhausted",
    "TypeAlreadyExists",
    "translate",
    "translated",
]

#: SQLSTATE -> exception class.  Subclasses of DocnumError register themselves here by declaring ``sqlstate``.
ERRORS: dict[str, type[DocnumError]] = {}

#: Every docnum error code starts with this prefix; codes not (yet) registered still become a DocnumError.
CODE_PREFIX = "NB"


class DocnumError(Exception):
    """An error reported by the docnum SQL functions.

    ``code`` (also ``sqlstate``) is the contract (``NB004``...); ``message``, ``detail`` and ``hint`` are
    the texts the database sent, for people (the hint in neutral words, no one interface's syntax);
    ``column`` is the SQL name of the argument at fault (the error's COLUMN field), or None.  The psycopg
    exception it came from is kept as ``__cause__``.  Subclasses declare their code with
    ``class X(DocnumError, code="NB0xx")``, which registers them in ERRORS.
    """

    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code: str | None = code if code is not None else type(self).default_code
        self.message = message
        self.detail = detail
        self.hint = hint
        self.column = column

    @property
    def sqlstate(self) -> str | None:
        """The SQLSTATE the database raised: the same as ``code``."""
        return self.code

    def __init_subclass__(cls, code: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.default_code = code
            ERRORS[code] = cls

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class ConfigNotFound(DocnumError, code="NB001"):
    """NB001: the document type is unknown."""


class SequenceExhausted(DocnumError, code="NB002"):
    """NB002: the counter would pass the type's ``max_value``."""


class LockTimeout(DocnumError, code="NB003"):
    """NB003: waiting for a counter took longer than the type's or the session's lock timeout."""


class ReservationExpired(DocnumError, code="NB004"):
    """NB004: the reservation token is unknown, cancelled, expired or past its ``expires_at``."""


class DuplicateNumber(DocnumError, code="NB005"):
    """NB005: the number already exists."""


class InvalidArgument(DocnumError, code="NB006"):
    """NB006: a bad template or argument (empty type, bad scope value, negative TTL...)."""


class ManualOverrideNotAllowed(DocnumError, code="NB007"):
    """NB007: a manual number on a type that does not allow it."""


class NumberingUnavailable(DocnumError, code="NB008"):
    """NB008: the transaction is read-only or the server is a hot standby."""


class InvalidStateTransition(DocnumError, code="NB009"):
    """NB009: the number is not in a state that allows the operation (e.g. cancelling a confirmed number)."""


class TypeAlreadyExists(DocnumError, code="NB010"):
    """NB010: ``define_type`` with an existing code and a different definition."""


class NumberNotFound(DocnumError, code="NB011"):
    """NB011: the number was never issued (``void`` / ``void_and_replace`` of an unknown number)."""


class RequestKeyReused(DocnumError, code="NB012"):
    """NB012: a ``request_id`` already named another request (another type, scope or function)."""


class InstallNotPermitted(DocnumError, code="NB013"):
    """NB013: the connected role cannot install or upgrade docnum; the HINT is the statement that fixes it."""


def translate(exc: psycopg.Error) -> Exception:
    """Return the docnum exception for a psycopg error, or the error itself when its code is not ours."""
    code = exc.sqlstate
    if code is None or not code.startswith(CODE_PREFIX):
        return exc
    cls = ERRORS.get(code, DocnumError)
    diag = exc.diag
    message = diag.message_primary or str(exc)
    error = cls(
        message, code=code, detail=diag.message_detail, hint=diag.message_hint, column=diag.column_name
    )
    error.__cause__ = exc
    return error


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise psycopg errors that carry a docnum code as the matching :class:`DocnumError`."""
    try:
        yield
    except psycopg.Error as exc:
        error = translate(exc)
        if error is exc:
            raise
        raise error from exc
