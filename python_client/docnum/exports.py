"""Writers of ``docnum audit-export``: the audit log as CSV or JSON Lines, to a file written atomically.

Nothing here talks to the database: the rows come in as :class:`~docnum.models.AuditEntry` values (a stream
from :meth:`docnum.Numbering.audit_export`), and the writers only lay them out.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import IO

from docnum.models import AuditEntry
from docnum.render import json_value

__all__ = ["AUDIT_EXPORT_COLUMNS", "ExportFileError", "ExportFormat", "write_export", "write_file_atomically"]


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


def write_export(entries: Iterable[AuditEntry], handle: IO[str], fmt: ExportFormat) -> int:
    """Write ``entries`` to ``handle`` (CSV with a header, or one JSON object per line); return the count."""
    written = 0
    if fmt is ExportFormat.csv:
        writer = csv.writer(handle)
        writer.writerow(AUDIT_EXPORT_COLUMNS)
        for entry in entries:
            writer.writerow([_csv_cell(name, getattr(entry, name)) for name in AUDIT_EXPORT_COLUMNS])
            written += 1
    else:
        for entry in entries:
            record = {name: getattr(entry, name) for name in AUDIT_EXPORT_COLUMNS}
            handle.write(json.dumps(record, default=json_value, ensure_ascii=False) + "\n")
            written += 1
    return written


def _csv_cell(column: str, value: object) -> str:
    """A CSV cell: jsonb columns as compact JSON, times in ISO 8601, NULL as an empty cell."""
    if value is None:
        return ""
    if column in _JSON_COLUMNS:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
