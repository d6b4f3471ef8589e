"""The ``docnum`` command line: the SQL functions of docs/sql-api.md, one command each.

The database is ``--dsn`` or ``$DOCNUM_DSN``; with neither, docnum starts its embedded PostgreSQL (a per-user
data directory) and installs the schema there on first use, so every command works on a fresh machine.

An error prints one line, ``error NB004: <message>``, then the database's DETAIL and HINT indented, and
exits with status 1; usage errors exit with status 2.  Reports exit with status 1 when they find something
that needs attention (``check-duplicates``, ``validate``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from docnum import queries
from docnum.client import Numbering
from docnum.errors import DocnumError
from docnum.models import AuditEntry, CounterStatus, DocumentType, Gap, ImportResult

__all__ = ["ImportSummary", "LegacyCsv", "app", "import_file"]

APPLICATION_NAME = "docnum-cli"

app = typer.Typer(
    name="docnum",
    help="Gapless, auditable document numbering inside PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(highlight=False)
err = Console(highlight=False, stderr=True)


# -- database ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Target:
    """The database the command works on, resolved on first use."""

    dsn_option: str | None
    _dsn: str | None = None

    def dsn(self, *, install_schema: bool = True) -> str:
        if self._dsn is None:
            if self.dsn_option:
                self._dsn = self.dsn_option
            else:
                from docnum import embedded

                self._dsn = embedded.resolve_dsn()
                if install_schema:
                    _install_schema_if_missing(self._dsn)
        return self._dsn


def _install_schema_if_missing(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        row = conn.execute(queries.SCHEMA_EXISTS).fetchone()
    if row is None or not row[0]:
        from docnum import schema

        typer.echo("docnum: installing schema docnum in the embedded database", err=True)
        schema.migrate(dsn)


def _target(ctx: typer.Context) -> _Target:
    target = ctx.find_object(_Target)
    if target is None:  # a command invoked without the app callback (e.g. from tests)
        target = _Target(None)
        ctx.obj = target
    return target


@contextmanager
def _numbering(ctx: typer.Context) -> Iterator[Numbering]:
    """A client on one short-lived connection; any failure ends the command with one error line."""
    with _reported(), psycopg.connect(_target(ctx).dsn(), application_name=APPLICATION_NAME) as conn:
        conn.add_notice_handler(_show_warning)
        yield Numbering(conn)


def _show_warning(notice: psycopg.errors.Diagnostic) -> None:
    """Show the database's warnings (e.g. a counter nearing its max_value) on stderr."""
    if notice.severity_nonlocalized == "WARNING":
        typer.echo(f"warning: {notice.message_primary}", err=True)
        if notice.message_hint:
            typer.echo(f"  hint: {notice.message_hint}", err=True)


@contextmanager
def _reported() -> Iterator[None]:
    """Turn any failure into ``error <code>: <message>`` on stderr and exit status 1, never a traceback."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except DocnumError as exc:
        _fail(exc.code or "NB", exc.message, exc.detail, exc.hint)
    except psycopg.Error as exc:
        first, *rest = (exc.diag.message_primary or str(exc) or type(exc).__name__).splitlines()
        detail = exc.diag.message_detail or "\n".join(line.strip() for line in rest) or None
        _fail(exc.sqlstate or type(exc).__name__, first, detail, exc.diag.message_hint)
    except Exception as exc:
        first, *rest = (str(exc) or type(exc).__name__).splitlines()
        _fail(type(exc).__name__, first, "\n".join(rest) or None, None)


def _fail(code: str, message: str, detail: str | None, hint: str | None) -> NoReturn:
    typer.echo(f"error {code}: {message}", err=True)
    for label, text in (("detail", detail), ("hint", hint)):
        if text:
            for line in text.splitlines():
                typer.echo(f"  {label}: {line}", err=True)
    raise typer.Exit(1)


# -- option parsing ------------------------------------------------------------------------------------


def _metadata(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="'--metadata'") from exc
    if not isinstance(parsed, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="'--metadata'")
    return parsed


def _day(value: datetime | None) -> date | None:
    return None if value is None else value.date()


def _json_value(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, default=_json_value, ensure_ascii=False, indent=2))


def _json_item(value: object) -> str:
    """One element of a JSON array printed piece by piece, laid out as ``_print_json`` lays out a list."""
    text = json.dumps(value, default=_json_value, ensure_ascii=False, indent=2)
    return "\n".join("  " + line for line in text.splitlines())


Actor = Annotated[
    str | None, typer.Option("--actor", help="Who asks (recorded in the ledger and audit log).")
]
ScopeValue = Annotated[
    str | None, typer.Option("--scope", help="Scope value, e.g. a project code (PROJECT and CONTRACT types).")
]
DocumentDate = Annotated[
    datetime | None,
    typer.Option("--date", formats=["%Y-%m-%d"], help="Document date (YYYY-MM-DD) that picks the period."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (required; recorded in the audit log).")]
NumberArgument = Annotated[str, typer.Argument(metavar="NUMBER", help="A document number.")]
TypeArgument = Annotated[str, typer.Argument(metavar="TYPE", help="Document type code.")]
OptionalTypeArgument = Annotated[
    str | None, typer.Argument(metavar="TYPE", help="Document type code (default: every type).")
]


# -- commands ------------------------------------------------------------------------------------------


@app.callback()
def main(
    ctx: typer.Context,
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            envvar="DOCNUM_DSN",
            show_envvar=True,
            help="PostgreSQL URI or conninfo. Default: the embedded server in the per-user data directory.",
        ),
    ] = None,
) -> None:
    """Gapless, auditable document numbering inside PostgreSQL."""
    ctx.obj = _Target(dsn)


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Install or upgrade schema docnum (alembic upgrade head)."""
    from docnum import schema

    with _reported():
        schema.migrate(_target(ctx).dsn(install_schema=False))
    out.print("schema docnum is at the latest revision")


@app.command("define-type")
def define_type(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(metavar="CODE", help="Type code, e.g. COR.")],
    format: Annotated[str, typer.Argument(metavar="FORMAT", help="Template, e.g. '{TYPE}-{YYYY}-{SEQ:5}'.")],
    scope: Annotated[
        str | None, typer.Option(help="GLOBAL (default), PROJECT, CONTRACT, YEARLY or MONTHLY.")
    ] = None,
    reset: Annotated[str | None, typer.Option(help="NEVER, YEARLY or MONTHLY (default: from scope).")] = None,
    time_zone: Annotated[str | None, typer.Option(help="IANA time zone of periods (default UTC).")] = None,
    max_value: Annotated[int | None, typer.Option(help="Largest sequence value.")] = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Reservation lifetime: seconds or e.g. '5 minutes'.")
    ] = None,
    lock_timeout: Annotated[
        str | None, typer.Option(help="Longest wait for a counter: seconds or e.g. '2 seconds'.")
    ] = None,
    allow_override: Annotated[
        bool | None, typer.Option("--allow-override/--no-allow-override", help="Allow manual numbers.")
    ] = None,
    metadata: Annotated[str | None, typer.Option(help="JSON object stored with the type.")] = None,
    actor: Actor = None,
) -> None:
    """Define a document type (re-running with the same definition is harmless)."""
    meta = _metadata(metadata)
    with _numbering(ctx) as numbering:
        defined = numbering.define_type(
            code,
            format,
            scope=scope,
            reset=reset,
            time_zone=time_zone,
            max_value=max_value,
            reservation_ttl=ttl,
            lock_timeout=lock_timeout,
            allow_manual_override=allow_override,
            metadata=meta,
            actor=actor,
        )
    out.print(_type_table(defined))


@app.command()
def reserve(
    ctx: typer.Context,
    document_type: Annotated[str, typer.Argument(metavar="TYPE", help="Document type code.")],
    scope: ScopeValue = None,
    actor: Actor = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Hold the number this long: seconds or e.g. '10 minutes'.")
    ] = None,
    document_date: DocumentDate = None,
    as_json: AsJson = False,
) -> None:
    """Reserve the next number; confirm or cancel it with the token."""
    with _numbering(ctx) as numbering:
        held = numbering.reserve(
            document_type, scope=scope, actor=actor, ttl=ttl, document_date=_day(document_date)
        )
    if as_json:
        _print_json(dataclasses.asdict(held))
        return
    table = Table(show_header=False, box=None)
    table.add_row("number", f"[bold]{held.document_number}[/bold]")
    table.add_row("token", str(held.token))
    table.add_row("sequence", str(held.sequence_value))
    table.add_row("expires", held.expires_at.isoformat(timespec="seconds"))
    out.print(table)


@app.command()
def confirm(
    ctx: typer.Context,
    token: Annotated[uuid.UUID, typer.Argument(metavar="TOKEN", help="Token printed by `docnum reserve`.")],
    actor: Actor = None,
    ref: Annotated[str | None, typer.Option("--ref", help="Reference of the document that uses it.")] = None,
) -> None:
    """Confirm a reservation; prints the number."""
    with _numbering(ctx) as numbering:
        number = numbering.confirm(token, actor=actor, document_ref=ref)
    typer.echo(number)


@app.command()
def cancel(
    ctx: typer.Context,
    token: Annotated[uuid.UUID, typer.Argument(metavar="TOKEN", help="Token printed by `docnum reserve`.")],
    actor: Actor = None,
    reason: Annotated[str | None, typer.Option(help="Why the number is given up.")] = None,
) -> None:
    """Cancel a reservation (the number is never issued again); prints the number."""
    with _numbering(ctx) as numbering:
        number = numbering.cancel(token, actor=actor, reason=reason)
    typer.echo(number)


@app.command("next")
def next_number(
    ctx: typer.Context,
    document_type: Annotated[str, typer.Argument(metavar="TYPE", help="Document type code.")],
    scope: ScopeValue = None,
    actor: Actor = None,
    ref: Annotated[str | None, typer.Option("--ref", help="Reference of the document that uses it.")] = None,
    document_date: DocumentDate = None,
) -> None:
    """Issue and confirm the next number in one step; prints it."""
    with _numbering(ctx) as numbering:
        number = numbering.next_number(
            document_type, scope=scope, actor=actor, document_ref=ref, document_date=_day(document_date)
        )
    typer.echo(number)


@app.command()
def expire(ctx: typer.Context) -> None:
    """Expire every reservation past its expiry time."""
    with _numbering(ctx) as numbering:
        expired = numbering.expire_reservations()
    out.print(f"expired {expired} reservation{'' if expired == 1 else 's'}")


@app.command()
def history(
    ctx: typer.Context,
    document_number: Annotated[str, typer.Argument(metavar="NUMBER", help="A document number.")],
    as_json: AsJson = False,
) -> None:
    """Show the audit trail of a number (and of the numbers it replaced or was replaced by), oldest first."""
    with _numbering(ctx) as numbering:
        entries = numbering.history(document_number)
    if as_json:
        _print_json([dataclasses.asdict(entry) for entry in entries])
        return
    if not entries:
        out.print(f"no audit entries for {document_number}")
        return
    out.print(history_table(entries, title=document_number))


# -- administration of numbers and counters --------------------------------------------------------------


@app.command()
def override(
    ctx: typer.Context,
    document_type: TypeArgument,
    document_number: NumberArgument,
    reason: Reason,
    actor: Actor = None,
    skip_validation: Annotated[
        bool,
        typer.Option(
            "--skip-validation",
            help="Record a number that does not match the type's template (it belongs to no counter).",
        ),
    ] = False,
) -> None:
    """Record a number chosen by a person (the type must allow manual override); prints it."""
    with _numbering(ctx) as numbering:
        number = numbering.override(
            document_type, document_number, actor=actor, reason=reason, skip_validation=skip_validation
        )
    typer.echo(number)


@app.command()
def void(ctx: typer.Context, document_number: NumberArgument, reason: Reason, actor: Actor = None) -> None:
    """Void a confirmed, overridden or imported number (it is never issued again); prints it."""
    with _numbering(ctx) as numbering:
        number = numbering.void(document_number, actor=actor, reason=reason)
    typer.echo(number)


@app.command()
def replace(ctx: typer.Context, document_number: NumberArgument, reason: Reason, actor: Actor = None) -> None:
    """Void a number and issue its replacement in the same counter; prints the new number."""
    with _numbering(ctx) as numbering:
        number = numbering.void_and_replace(document_number, actor=actor, reason=reason)
    typer.echo(number)


Period = Annotated[
    str | None,
    typer.Option("--period", help="Counter period: '2025' (YEARLY), '2025-10' (MONTHLY). Default: current."),
]


@app.command("set")
def set_counter(
    ctx: typer.Context,
    document_type: TypeArgument,
    value: Annotated[
        int, typer.Argument(metavar="VALUE", help="New counter value; the next number is VALUE+1.")
    ],
    reason: Reason,
    scope: ScopeValue = None,
    period: Period = None,
    actor: Actor = None,
) -> None:
    """Set a counter. Values jumped over are recorded; values the ledger holds are never issued again."""
    with _numbering(ctx) as numbering:
        new_value = numbering.set_counter(
            document_type, scope=scope, period=period, value=value, actor=actor, reason=reason
        )
    counter = " ".join(part for part in (document_type, scope, period) if part)
    typer.echo(f"counter {counter} set to {new_value}")


# -- legacy import ---------------------------------------------------------------------------------------

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
    """Running totals of an import; ``rejected_rows`` keeps the first rejected rows with their file line."""

    rows: int = 0
    batches: int = 0
    imported: int = 0
    already_present: int = 0
    rejected: int = 0
    rejected_rows: list[tuple[int, ImportResult]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def add(self, batch: CsvBatch, results: list[ImportResult], keep_rejected: int) -> None:
        self.batches += 1
        self.rows += len(batch.rows)
        for result in results:
            if result.status == "imported":
                self.imported += 1
            elif result.status == "already_present":
                self.already_present += 1
            else:
                self.rejected += 1
                if len(self.rejected_rows) < keep_rejected:
                    self.rejected_rows.append((batch.lines[result.row_number - 1], result))


def import_file(
    numbering: Numbering,
    source: LegacyCsv,
    *,
    batch_size: int = 5000,
    actor: str | None = None,
    summary: ImportSummary | None = None,
    on_batch: Callable[[ImportSummary], None] | None = None,
    keep_rejected: int = REJECTED_SHOWN,
) -> ImportSummary:
    """Import a CSV file with one ``import_numbers`` call (one transaction) per batch; return the totals.

    ``summary`` (when given) is updated after every committed batch, so a caller that catches a failure knows
    how many rows were committed before it; importing the file again reports those as already present.
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


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.csv",
            exists=True,
            dir_okay=False,
            readable=True,
            help="CSV with a header: document_type, document_number and optionally created_at, document_ref.",
        ),
    ],
    actor: Actor = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows per call; each batch is its own transaction.")
    ] = 5000,
) -> None:
    """Import legacy numbers from a CSV file, in batches; re-running it changes nothing already imported."""
    try:
        source = LegacyCsv(file)
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise typer.BadParameter(str(exc), param_hint="'FILE.csv'") from exc
    summary = ImportSummary()
    progress = Progress(
        TextColumn("importing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with _numbering(ctx) as numbering, progress:
        task = progress.add_task("import", total=max(source.size, 1), rows=0)

        def advance(done: ImportSummary) -> None:
            progress.update(task, completed=source.bytes_read, rows=done.rows)

        try:
            import_file(
                numbering, source, batch_size=batch_size, actor=actor, summary=summary, on_batch=advance
            )
        except BaseException:
            progress.stop()
            if summary.rows:
                typer.echo(
                    f"import stopped after {summary.rows:,} rows in {summary.batches} committed batches"
                    " (rows that follow them were not imported; importing the file again reports the"
                    " committed rows as already present)",
                    err=True,
                )
            raise
    typer.echo(_import_summary(summary))
    if summary.rejected_rows:
        out.print(_rejected_table(summary))
        hidden = summary.rejected - len(summary.rejected_rows)
        if hidden:
            typer.echo(f"... and {hidden:,} more rejected rows not shown")


# -- reports ---------------------------------------------------------------------------------------------


@app.command()
def status(ctx: typer.Context, document_type: OptionalTypeArgument = None, as_json: AsJson = False) -> None:
    """Show every counter: its value, utilisation and numbers by state."""
    with _numbering(ctx) as numbering:
        counters = numbering.status(document_type)
    if as_json:
        _print_json([dataclasses.asdict(counter) for counter in counters])
        return
    if not counters:
        typer.echo(f"no counters{f' for {document_type}' if document_type else ''}")
        return
    out.print(_status_table(counters))


@app.command()
def gaps(
    ctx: typer.Context,
    document_type: OptionalTypeArgument = None,
    scope: ScopeValue = None,
    period: Period = None,
    as_json: AsJson = False,
) -> None:
    """List ranges of counter values never issued, each with its recorded reason (or none: unexplained)."""
    ranges = values = unexplained = 0
    with _numbering(ctx) as numbering:
        found = closing(numbering.iter_gaps(document_type, scope=scope, period=period))
        # Printed as they come from a server-side cursor: any number of ranges fits in memory.
        with found as stream:
            for gap in stream:
                if as_json:
                    item = _json_item(dataclasses.asdict(gap))
                    typer.echo(("[\n" if ranges == 0 else ",\n") + item, nl=False)
                else:
                    if ranges == 0:
                        out.print(_GAP_HEADER, highlight=False, soft_wrap=True)
                    out.print(_gap_line(gap), highlight=False, soft_wrap=True)
                ranges += 1
                values += gap.value_count
                unexplained += 0 if gap.explained else gap.value_count
    if as_json:
        typer.echo("[]" if ranges == 0 else "\n]")
    elif ranges == 0:
        out.print("no gaps")
    else:
        out.print(
            f"{values:,} value{'' if values == 1 else 's'} never issued in {ranges:,}"
            f" range{'' if ranges == 1 else 's'}; {unexplained:,} unexplained"
        )


@app.command("check-duplicates")
def check_duplicates(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Find numbers used twice in the ledger or in the registered application tables; exit 1 if any."""
    with _numbering(ctx) as numbering:
        duplicates = numbering.check_duplicates()
    if as_json:
        _print_json([dataclasses.asdict(duplicate) for duplicate in duplicates])
    elif not duplicates:
        out.print("no duplicate numbers")
    else:
        table = Table(title="numbers used more than once", title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("number", no_wrap=True)
        table.add_column("uses", justify="right")
        table.add_column("found in", overflow="fold")
        for duplicate in duplicates:
            if duplicate.problem is not None:  # a registered table that could not be checked
                where, why = escape(", ".join(duplicate.found_in)), escape(duplicate.problem)
                table.add_row("-", "-", f"{where}: [red]not checked[/red]: {why}")
                continue
            table.add_row(
                escape(duplicate.document_number or ""),
                str(duplicate.occurrences),
                escape(", ".join(duplicate.found_in)),
            )
        out.print(table)
    if duplicates:
        raise typer.Exit(1)


@app.command()
def validate(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Run the integrity checks; exit 1 when the report is not empty."""
    with _numbering(ctx) as numbering:
        findings = numbering.validate()
    if as_json:
        _print_json([dataclasses.asdict(finding) for finding in findings])
    elif not findings:
        out.print("healthy: no findings")
    else:
        table = Table(title="integrity findings", title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("check", no_wrap=True)
        table.add_column("severity", no_wrap=True)
        table.add_column("detail", overflow="fold")
        for finding in findings:
            style = "red" if finding.severity == "error" else "yellow"
            table.add_row(
                finding.check_name, f"[{style}]{finding.severity}[/{style}]", escape(finding.detail)
            )
        out.print(table)
        errors = sum(1 for finding in findings if finding.severity == "error")
        out.print(f"{errors} error(s), {len(findings) - errors} warning(s)")
    if findings:
        raise typer.Exit(1)


class ExportFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


#: Columns of an audit export, in the order of docnum.audit_export.
AUDIT_EXPORT_COLUMNS = tuple(field.name for field in dataclasses.fields(AuditEntry))
_JSON_COLUMNS = frozenset({"old_value", "new_value", "metadata"})


@app.command("audit-export")
def audit_export(
    ctx: typer.Context,
    start: Annotated[
        str, typer.Option("--start", help="First instant, YYYY-MM-DD[THH:MM[:SS]][+HH:MM] (inclusive).")
    ],
    end: Annotated[
        str, typer.Option("--end", help="End instant (exclusive); a bare date YYYY-MM-DD includes that day.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", dir_okay=False, help="File to write; '-' for standard output.")
    ],
    document_type: Annotated[
        str | None, typer.Option("--type", help="Only rows of this document type.")
    ] = None,
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", help="csv (with a header line) or jsonl (one object per line)."),
    ] = ExportFormat.csv,
    time_zone: Annotated[
        str, typer.Option("--time-zone", help="IANA time zone of --start and --end without an offset.")
    ] = "UTC",
) -> None:
    """Export the audit log of a time range, streamed from the database in the order it was written."""
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise typer.BadParameter(f"unknown time zone {time_zone!r}", param_hint="'--time-zone'") from exc
    first = _instant(start, zone, param_hint="'--start'", end_of_day=False)
    last = _instant(end, zone, param_hint="'--end'", end_of_day=True)
    if last <= first:
        raise typer.BadParameter(f"must be after --start ({first.isoformat()})", param_hint="'--end'")
    to_stdout = str(output) == "-"
    with _numbering(ctx) as numbering:
        entries = numbering.audit_export(first, last, document_type)
        if to_stdout:
            written = _write_export(entries, sys.stdout, fmt)
        else:
            written = _write_file_atomically(output, lambda handle: _write_export(entries, handle, fmt))
    summary = (
        f"wrote {written:,} audit row{'' if written == 1 else 's'}"
        f" ({first.isoformat()} <= occurred_at < {last.isoformat()}) to {'stdout' if to_stdout else output}"
    )
    typer.echo(summary, err=to_stdout)


def _instant(value: str, zone: ZoneInfo, *, param_hint: str, end_of_day: bool) -> datetime:
    """An instant from ISO 8601 text; without an offset it is in ``zone``. A bare date is its midnight, or
    (``end_of_day``) the next midnight, so ``--end 2025-01-31`` includes the 31st."""
    text = value.strip()
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
        parsed = datetime.fromisoformat(text) if day is None else datetime(day.year, day.month, day.day)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]", param_hint=param_hint
        ) from exc
    if day is not None and end_of_day:
        parsed += timedelta(days=1)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def _write_file_atomically(path: Path, write: Callable[[IO[str]], int]) -> int:
    """Write through a temporary file next to ``path``, then rename it: a failed export leaves no file.

    The file is created readable by its owner only (audit rows name people and addresses).
    """
    descriptor, temporary = tempfile.mkstemp(
        dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".part"
    )
    try:
        with open(descriptor, "w", encoding="utf-8", newline="") as handle:
            written = write(handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return written


def _write_export(entries: Iterable[AuditEntry], handle: IO[str], fmt: ExportFormat) -> int:
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
            handle.write(json.dumps(record, default=_json_value, ensure_ascii=False) + "\n")
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


@app.command()
def demo(
    ctx: typer.Context,
    reservations: Annotated[int, typer.Option(min=10, help="Concurrent reservations of BOQ numbers.")] = 200,
    workers: Annotated[int, typer.Option(min=2, max=90, help="Threads, and connections in the pool.")] = 60,
) -> None:
    """Run the high-load scenario (hundreds of concurrent reservations) and prove the result gapless."""
    from docnum import demo as demo_module

    with _reported():
        dsn = _target(ctx).dsn()
        passed = demo_module.run(dsn, out, reservations=reservations, workers=workers)
    if not passed:
        raise typer.Exit(1)


# -- rendering -----------------------------------------------------------------------------------------


def _type_table(document_type: DocumentType) -> Table:
    table = Table(title=f"document type {document_type.code}", show_header=False, title_justify="left")
    shown = dataclasses.asdict(document_type)
    for hidden in ("render_head", "render_tail", "seq_width"):
        shown.pop(hidden)
    for name, value in shown.items():
        text = json.dumps(value) if isinstance(value, dict) else "" if value is None else str(value)
        table.add_row(name, text)
    return table


def history_table(entries: list[AuditEntry], *, title: str | None = None, compact: bool = False) -> Table:
    """The audit trail as a table, one row per entry with its new values as ``key=value`` pairs.

    ``compact`` leaves out the audit id, the application and the date, for narrow summaries.  When the
    entries concern more than one number (a void-and-replace chain), a column names the number of each, in
    place of the application.
    """
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    columns: tuple[str, ...] = (
        ("time", "operation", "actor") if compact else ("id", "time", "operation", "actor", "application")
    )
    if len({entry.document_number for entry in entries}) > 1:
        after = columns.index("operation") + 1
        shown = [column for column in columns if column != "application"]  # room for the number
        columns = (*shown[:after], "number", *shown[after:])
    for column in columns:
        table.add_column(column, no_wrap=True)
    table.add_column("details", overflow="fold")
    for entry in entries:
        values = entry.new_value if isinstance(entry.new_value, dict) else {"value": entry.new_value}
        details = " ".join(f"{key}={value}" for key, value in values.items() if value is not None)
        when = entry.occurred_at.astimezone()
        cells = {
            "id": str(entry.audit_id),
            "time": when.strftime("%H:%M:%S.%f")[:-3] if compact else when.strftime("%Y-%m-%d %H:%M:%S"),
            "operation": entry.operation,
            "number": entry.document_number or "",
            "actor": entry.actor or "",
            "application": entry.application_name or "",
        }
        table.add_row(*(cells[column] for column in columns), details)
    return table


_STATES = ("reserved", "confirmed", "cancelled", "expired", "voided", "overridden", "imported")


def _when(moment: datetime | None, empty: str = "") -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment is not None else empty


def _status_table(counters: list[CounterStatus]) -> Table:
    """One row per counter; its numbers by state in one cell, a line per state that has any."""
    table = Table(title="counters", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("type", "scope", "period"):
        table.add_column(column, no_wrap=True)
    for column in ("current", "max", "used %"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("numbers", min_width=12)
    table.add_column("last used", min_width=10)
    for counter in counters:
        used = f"{counter.utilisation_pct:.2f}"
        style = "red" if counter.utilisation_pct >= 90 else "yellow" if counter.utilisation_pct >= 75 else ""
        states = "\n".join(f"{getattr(counter, s):,} {s}" for s in _STATES if getattr(counter, s))
        table.add_row(
            escape(counter.document_type),
            escape(counter.scope_value) or "-",
            counter.period or "-",
            f"{counter.current_value:,}",
            f"{counter.max_value:,}",
            f"[{style}]{used}[/{style}]" if style else used,
            states or "none",
            _when(counter.last_used_at, "never"),
        )
    return table


_GAP_HEADER = f"{'type':<8} {'scope':<12} {'period':<8} {'values':>27} {'count':>17}  explanation"


def _gap_line(gap: Gap) -> str:
    """One range of ``docnum gaps``, a line of its own (the output is streamed, not laid out as a table)."""
    values = str(gap.first_value) if gap.value_count == 1 else f"{gap.first_value}..{gap.last_value}"
    if gap.explained:
        who = ", ".join(part for part in (gap.actor, _when(gap.recorded_at)) if part)
        explanation = escape(
            f"{gap.source}: {gap.reason or 'no reason given'}" + (f" ({who})" if who else "")
        )
    else:
        explanation = "[red]unexplained[/red]"
    return (
        f"{escape(gap.document_type):<8} {escape(gap.scope_value) or '-':<12} {gap.period or '-':<8}"
        f" {values:>27} {gap.value_count:>17,}  {explanation}"
    )


def _import_summary(summary: ImportSummary) -> str:
    rate = f", {summary.rows / summary.seconds:,.0f} rows/s" if summary.seconds > 0 else ""
    batches = f"{summary.batches} batch{'' if summary.batches == 1 else 'es'}"
    return (
        f"imported {summary.imported:,}, already present {summary.already_present:,},"
        f" rejected {summary.rejected:,} ({summary.rows:,} rows in {batches}, {summary.seconds:.1f} s{rate})"
    )


def _rejected_table(summary: ImportSummary) -> Table:
    table = Table(title="rejected rows", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("line", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("number", overflow="fold")
    table.add_column("reason", overflow="fold")
    for line, result in summary.rejected_rows:
        table.add_row(
            str(line),
            escape(result.document_type or ""),
            escape(result.document_number or ""),
            escape(result.detail or ""),
        )
    return table


from docnum.cli_ops import register  # noqa: E402  (the server, dsn, psql, doctor and sweep commands)

register(app)
