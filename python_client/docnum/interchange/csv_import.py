"""The legacy CSV importer behind ``docnum import``: a file read as a stream of batches, one transaction each.

A row keeps the number of the file line it starts on (a quoted cell may span lines), so that a rejected row
can be found in the file.  Nothing here prints: the command shows :class:`ImportSummary`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from docnum.client import Numbering
from docnum.models import ImportResult

__all__ = ["REJECTED_SHOWN", "CsvBatch", "CsvProblem", "ImportSummary", "LegacyCsv", "import_file"]

#: Rejected rows listed after an import; the summary counts the others.
REJECTED_SHOWN = 50


@dataclasses.dataclass(frozen=True)
class CsvBatch:
    """Consecutive data rows of a CSV file, with the file line each starts on."""

    lines: list[int]
    rows: list[dict[str, str | None]]


class CsvProblem(ValueError):
    """A legacy CSV that cannot be read: no header, a missing column, a cell too long; ``line`` where."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line


class LegacyCsv:
    """A CSV of legacy numbers, read as a stream of batches: a file (``docnum import``) or the body of an HTTP
    import (:meth:`from_bytes`).

    The header names the columns (case and surrounding spaces ignored): ``document_type`` and
    ``document_number`` are required, ``created_at`` and ``document_ref`` optional, others ignored.  An empty
    cell is a missing value.  The text is UTF-8 (a byte order mark is allowed); a cell holds at most
    :data:`MAX_CELL` characters.  ``bytes_read`` tells how far the reading got, for a progress bar.  What
    cannot be read is a :class:`CsvProblem`.
    """

    REQUIRED = ("document_type", "document_number")
    OPTIONAL = ("created_at", "document_ref")
    #: The longest cell read (the csv module's limit, left as it is); a legacy number is well under 300.
    MAX_CELL = 131_072

    def __init__(
        self, path: Path | None = None, *, data: bytes | None = None, name: str | None = None
    ) -> None:
        if (path is None) == (data is None):
            raise TypeError("give a path or data")
        self.path = path
        self._data = data
        self.name = name or (path.name if path is not None else "the CSV")
        self.size = path.stat().st_size if path is not None else len(data or b"")
        self.bytes_read = 0
        with self._open() as handle:
            try:
                header = next(csv.reader(self._lines(handle, count=False)), None)
            except csv.Error as exc:
                raise CsvProblem(_csv_message(exc, self.MAX_CELL), 1) from None
        if not header:
            raise CsvProblem(f"{self.name} is empty; it needs a header line")
        names = [name.strip().lower() for name in header]
        missing = [name for name in self.REQUIRED if name not in names]
        if missing:
            raise CsvProblem(
                f"{self.name} has no column {', '.join(missing)} (its header: {', '.join(header)[:200]})"
            )
        self.columns = {name: names.index(name) for name in (*self.REQUIRED, *self.OPTIONAL) if name in names}

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "the CSV body") -> LegacyCsv:
        return cls(data=data, name=name)

    def _open(self) -> IO[bytes]:
        return self.path.open("rb") if self.path is not None else io.BytesIO(self._data or b"")

    def batches(self, batch_size: int) -> Iterator[CsvBatch]:
        """The data rows, ``batch_size`` at a time (the last batch may be shorter)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.bytes_read = 0
        with self._open() as handle:
            reader = csv.reader(self._lines(handle))
            try:
                next(reader, None)  # the header
            except csv.Error as exc:
                raise CsvProblem(str(exc), 1) from None
            lines: list[int] = []
            rows: list[dict[str, str | None]] = []
            # reader.line_num counts the physical lines read so far: a record starts on the line after the
            # previous record's last one, however many lines its quoted cells span.
            line_after = reader.line_num
            while True:
                try:
                    record = next(reader, None)
                except csv.Error as exc:
                    raise CsvProblem(_csv_message(exc, self.MAX_CELL), line_after + 1) from None
                if record is None:
                    break
                line, line_after = line_after + 1, reader.line_num
                if not record:  # a blank line
                    continue
                lines.append(line)
                rows.append(
                    {
                        name: (record[i] or None) if i < len(record) else None
                        for name, i in self.columns.items()
                    }
                )
                if len(rows) == batch_size:
                    yield CsvBatch(lines, rows)
                    lines, rows = [], []
            if rows:
                yield CsvBatch(lines, rows)

    def _lines(self, handle: IO[bytes], *, count: bool = True) -> Iterator[str]:
        # Binary lines, so the bytes read are known; a newline byte never splits a UTF-8 character.
        encoding = "utf-8-sig"
        for number, raw in enumerate(handle, start=1):
            if count:
                self.bytes_read += len(raw)
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError:
                raise CsvProblem(f"{self.name} is not UTF-8", number) from None
            encoding = "utf-8"


def _csv_message(exc: csv.Error, limit: int) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return f"a cell holds more than {limit:,} characters"
    return text[:200]


@dataclasses.dataclass
class ImportSummary:
    """Running totals of an import; ``rejected_rows`` keeps the first rejected rows with their file line.

    ``batches`` and ``rows`` count committed batches only: when an import stops, batch ``batches + 1`` was
    the one in progress (rolled back).
    """

    rows: int = 0
    batches: int = 0
    imported: int = 0
    already_present: int = 0
    rejected: int = 0
    rejected_rows: list[tuple[int, ImportResult]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def add(self, batch: CsvBatch, results: list[ImportResult], keep_rejected: int | None) -> None:
        self.batches += 1
        self.rows += len(batch.rows)
        for result in results:
            if result.status == "imported":
                self.imported += 1
            elif result.status == "already_present":
                self.already_present += 1
            else:
                self.rejected += 1
                if keep_rejected is None or len(self.rejected_rows) < keep_rejected:
                    self.rejected_rows.append((batch.lines[result.row_number - 1], result))

    def stopped(self) -> str:
        """What an import that stopped (error or Ctrl-C) left behind."""
        current = self.batches + 1
        if self.batches == 0:
            return "import stopped in batch 1: nothing was committed (batch 1 rolled back)"
        committed = "batch 1" if self.batches == 1 else f"batches 1..{self.batches}"
        return (
            f"import stopped in batch {current}: {committed} committed ({self.rows:,} rows),"
            f" batch {current} rolled back; importing the file again reports the committed rows as"
            " already present"
        )


def import_file(
    numbering: Numbering,
    source: LegacyCsv,
    *,
    batch_size: int = 5000,
    actor: str | None = None,
    summary: ImportSummary | None = None,
    on_batch: Callable[[ImportSummary], None] | None = None,
    keep_rejected: int | None = REJECTED_SHOWN,
) -> ImportSummary:
    """Import a CSV file with one ``import_numbers`` call (one transaction) per batch; return the totals.

    ``summary`` (when given) is updated after every committed batch, so a caller that catches a failure knows
    how many rows were committed before it; importing the file again reports those as already present.
    ``keep_rejected`` caps the rejected rows kept with their line (None: all of them).
    """
    summary = summary if summary is not None else ImportSummary()
    started = time.perf_counter()
    for batch in source.batches(batch_size):
        results = numbering.import_numbers(batch.rows, actor=actor)
        summary.add(batch, results, keep_rejected)
        summary.seconds = time.perf_counter() - started
        if on_batch is not None:
            on_batch(summary)
    return summary
