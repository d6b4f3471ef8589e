"""Writers of ``docnum audit-export``: the audit log as CSV or JSON Lines, to a file written atomically.

Nothing here talks to the database: the rows come in as :class:`~docnum.models.AuditEntry` values (a stream
from :meth:`docnum.Numbering.audit_export`), and the writers only lay them out.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import IO

from docnum.interchange.jsonable import json_value
from docnum.models import AuditEntry

__all__ = [
    "AUDIT_EXPORT_COLUMNS",
    "ExportEncoder",
    "ExportFileError",
    "ExportFormat",
    "neutralised",
    "write_export",
    "write_file_atomically",
]


class ExportFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


#: Columns of an audit export, in the order of docnum.audit_export.
AUDIT_EXPORT_COLUMNS = tuple(field.name for field in dataclasses.fields(AuditEntry))
_JSON_COLUMNS = frozenset({"old_value", "new_value", "metadata"})


class ExportFileError(OSError):
    """The export file could not be written; the message names the file asked for, never a temporary one."""


def write_file_atomically(path: Path, write: Callable[[IO[str]], int]) -> int:
    """Write through a temporary file next to ``path``, then rename it: a failed export leaves no file.

    The file is created readable by its owner only (audit rows name people and addresses).  An OSError
    becomes :class:`ExportFileError` naming ``path`` (the temporary file's name means nothing to a reader).
    """
    temporary: str | None = None
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".part"
        )
        with open(descriptor, "w", encoding="utf-8", newline="") as handle:
            written = write(handle)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, BrokenPipeError):
            raise
        raise ExportFileError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise
    return written


class ExportEncoder:
    """Lays audit rows out as CSV (a header, then one line a row) or JSON Lines, a chunk at a time: the one
    writer of ``docnum audit-export`` and of the HTTP API's export.

    CSV cells are safe to open in a spreadsheet: a text cell that starts with ``=``, ``+``, ``-``, ``@``, a
    TAB or a CR (which a spreadsheet would take for a formula) gets a ``'`` in front, as OWASP's "CSV
    Injection" advises, and so does one that starts with ``'`` itself, so the rule reverses: drop the first
    character of a text cell that starts with ``'``. Numbers and times are never changed. JSON Lines keep
    every value exactly.
    """

    def __init__(self, fmt: ExportFormat) -> None:
        self.format = fmt

    def header(self) -> str:
        return self._csv_lines([list(AUDIT_EXPORT_COLUMNS)]) if self.format is ExportFormat.csv else ""

    def rows(self, entries: Iterable[AuditEntry]) -> str:
        if self.format is ExportFormat.csv:
            return self._csv_lines(
                [
                    [_csv_cell(name, getattr(entry, name)) for name in AUDIT_EXPORT_COLUMNS]
                    for entry in entries
                ]
            )
        return "".join(
            json.dumps(
                {name: getattr(entry, name) for name in AUDIT_EXPORT_COLUMNS},
                default=json_value,
                ensure_ascii=False,
            )
            + "\n"
            for entry in entries
        )

    @staticmethod
    def _csv_lines(records: list[list[str]]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(records)
        return buffer.getvalue()


def write_export(entries: Iterable[AuditEntry], handle: IO[str], fmt: ExportFormat, chunk: int = 500) -> int:
    """Write ``entries`` to ``handle`` (CSV with a header, or one JSON object per line); return the count."""
    encoder = ExportEncoder(fmt)
    handle.write(encoder.header())
    written = 0
    pending: list[AuditEntry] = []
    for entry in entries:
        pending.append(entry)
        if len(pending) == chunk:
            handle.write(encoder.rows(pending))
            written, pending = written + len(pending), []
    handle.write(encoder.rows(pending))
    return written + len(pending)


#: What a spreadsheet takes for the start of a formula (OWASP, "CSV Injection"), and the escape itself.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def neutralised(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows as text: with a ``'`` in front when it starts like a formula
    (or with a ``'``); otherwise as it is."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_cell(column: str, value: object) -> str:
    """A CSV cell: jsonb columns as compact JSON, times in ISO 8601, NULL empty; text neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if column in _JSON_COLUMNS:
        return neutralised(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return neutralised(str(value))
