"""The legacy CSV importer behind ``docnum import``: a file read as a stream of batches, one transaction each.

A row keeps the number of the file line it starts on (a quoted cell may span lines), so that a rejected row
can be found in the file.  Nothing here prints: the command shows :class:`ImportSummary`.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from docnum.client import Numbering
from docnum.models import ImportResult

__all__ = ["REJECTED_SHOWN", "CsvBatch", "ImportSummary", "LegacyCsv", "import_file"]

#: Rejected rows listed after an import; the summary counts the others.
REJECTED_SHOWN = 50


@dataclasses.dataclass(frozen=True)
class CsvBatch:
    """Consecutive data rows of a CSV file, with the file line each starts on."""

    lines: list[int]
    rows: list[dict[str, str | None]]


class LegacyCsv:
    """A CSV file of legacy numbers, read as a stream of batches.

    The header names the columns (case and surrounding spaces ignored): ``document_type`` and
    ``document_number`` are required, ``created_at`` and ``document_ref`` optional, others ignored.  An empty
    cell is a missing value.  The file is UTF-8 (a byte order mark is allowed).  ``bytes_read`` tells how far
    the reading got, for a progress bar.
    """

    REQUIRED = ("document_type", "document_number")
    OPTIONAL = ("created_at", "document_ref")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.bytes_read = 0
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
        if not header:
            raise ValueError(f"{path.name} is empty; it needs a header line")
        names = [name.strip().lower() for name in header]
        missing = [name for name in self.REQUIRED if name not in names]
        if missing:
            raise ValueError(
                f"{path.name} has no column {', '.join(missing)} (its header: {', '.join(header)})"
            )
        self.columns = {name: names.index(name) for name in (*self.REQUIRED, *self.OPTIONAL) if name in names}

    def batches(self, batch_size: int) -> Iterator[CsvBatch]:
        """The data rows, ``batch_size`` at a time (the last batch may be shorter)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.bytes_read = 0
        with self.path.open("rb") as handle:
            reader = csv.reader(self._lines(handle))
            next(reader, None)  # the header
            lines: list[int] = []
            rows: list[dict[str, str | None]] = []
            # reader.line_num counts the physical lines read so far: a record starts on the line after the
            # previous record's last one, however many lines its quoted cells span.
            line_after = reader.line_num
            for record in reader:
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

    def _lines(self, handle: IO[bytes]) -> Iterator[str]:
        # Binary lines, so the bytes read are known; a newline byte never splits a UTF-8 character.
        encoding = "utf-8-sig"
        for raw in handle:
            self.bytes_read += len(raw)
            yield raw.decode(encoding)
            encoding = "utf-8"


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
