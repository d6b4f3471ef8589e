"""The ``docnum`` command line: the SQL functions of docs/sql-api.md, one command each.

This module holds the commands only.  What they share (the database, error lines, exit codes, --json,
--quiet, Ctrl-C) is in :mod:`docnum.cli.support`, the hint wording in :mod:`docnum.cli.hints`, the tables
in :mod:`docnum.cli.render`, the CSV importer in :mod:`docnum.interchange.csv_import` and the export
writers in :mod:`docnum.interchange.exports`.

The database is ``--dsn`` or ``$DOCNUM_DSN``; with neither, docnum uses its embedded PostgreSQL (a per-user
data directory, ``$DOCNUM_DATA_DIR``) and installs the schema there on first use.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import uuid
from contextlib import closing
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from docnum.cli.render import (
    GAP_HEADER,
    gap_line,
    history_lines,
    history_table,
    json_item,
    status_table,
    type_record,
    type_table,
)
from docnum.cli.support import (
    APPLICATION_NAME,
    EXIT_CODES_HELP,
    EXIT_FINDING,
    CommandError,
    DocnumGroup,
    Target,
    err,
    leave_behind,
    numbering,
    out,
    print_json,
    reported,
    require_type,
    say,
    target,
)
from docnum.interchange.csv_import import REJECTED_SHOWN, ImportSummary, LegacyCsv, import_file
from docnum.interchange.exports import (
    AUDIT_EXPORT_COLUMNS,
    ExportFileError,
    ExportFormat,
    write_export,
    write_file_atomically,
)

__all__ = ["APPLICATION_NAME", "AUDIT_EXPORT_COLUMNS", "ImportSummary", "LegacyCsv", "app", "import_file"]


class _Commands(DocnumGroup, TyperGroup):
    """Commands listed in the order they are defined (the order of a working day), not alphabetically."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)


app = typer.Typer(
    name="docnum",
    cls=_Commands,
    help="Gapless, auditable document numbering inside PostgreSQL.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else plural or word + 's'}"


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
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (required; recorded in the audit log).")]
NumberArgument = Annotated[str, typer.Argument(metavar="NUMBER", help="A document number.")]
TypeArgument = Annotated[str, typer.Argument(metavar="TYPE", help="Document type code.")]
OptionalTypeArgument = Annotated[
    str | None, typer.Argument(metavar="TYPE", help="Document type code (default: every type).")
]
Token = Annotated[uuid.UUID, typer.Argument(metavar="TOKEN", help="Token printed by `docnum reserve`.")]
Period = Annotated[
    str | None,
    typer.Option("--period", help="Counter period: '2025' (YEARLY), '2025-10' (MONTHLY). Default: current."),
]


def _number(as_json: bool, document_number: str, **fields: object) -> None:
    """The result of a command that gives one number: the number alone, or a JSON object."""
    if as_json:
        print_json({"document_number": document_number, **fields})
    else:
        typer.echo(document_number)


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
            help="PostgreSQL URI or conninfo. Default: the embedded server ($DOCNUM_DATA_DIR).",
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print only results (numbers, tables, JSON, findings), warnings and errors: no messages.",
        ),
    ] = False,
) -> None:
    """Gapless, auditable document numbering inside PostgreSQL."""
    source = ctx.get_parameter_source("dsn")
    dsn_from = (
        None
        if dsn is None
        else "DOCNUM_DSN"
        if source is not None and source.name == "ENVIRONMENT"
        else "--dsn"
    )
    ctx.obj = Target(dsn, dsn_from=dsn_from, quiet=quiet)


@app.command(epilog="Example: docnum migrate")
def migrate(ctx: typer.Context) -> None:
    """Install or upgrade schema docnum (alembic upgrade head)."""
    from docnum.ops import schema

    with reported():
        schema.migrate(target(ctx).dsn(install_schema=False))
    say(ctx, "schema docnum is at the latest revision")


@app.command("sql", epilog="Example: docnum sql --from 0006 > upgrade.sql")
def sql_script(
    from_revision: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="REV",
            help="Print the upgrade from revision REV (SELECT version_num FROM public.alembic_version)"
            " instead of the installation.",
        ),
    ] = None,
) -> None:
    """Print the SQL script that installs docnum on an empty database, or upgrades it from --from REV: what
    `docnum migrate` runs, version stamps included, so a later `docnum migrate` has nothing to do. Run it with
    `psql -1 -v ON_ERROR_STOP=1 -f FILE` as a superuser or as a role with CREATEROLE that owns the database.
    """
    from alembic.util import CommandError as AlembicCommandError

    from docnum.ops import schema

    with reported():
        try:
            script = schema.sql_script(from_revision)
        except AlembicCommandError as exc:
            raise CommandError(
                "usage",
                f"no revision {from_revision!r}",
                hint=f"Revisions run from 0001 to {schema.head_revision()}.",
            ) from exc
    sys.stdout.write(script)


@app.command(
    "define-type", epilog="Example: docnum define-type RFA '{SCOPE}/{TYPE}/{YYYY}/{SEQ:4}' --scope PROJECT"
)
def define_type(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(metavar="TYPE", help="Type code, e.g. COR.")],
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
    as_json: AsJson = False,
) -> None:
    """Define a document type (re-running with the same definition is harmless); prints it."""
    meta = _metadata(metadata)
    with numbering(ctx) as client:
        defined = client.define_type(
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
    if as_json:
        print_json(type_record(defined))
    else:
        out.print(type_table(defined))


@app.command("alter-type", epilog="Example: docnum alter-type COR --max-value 999999 --reason 'six digits'")
def alter_type(
    ctx: typer.Context,
    code: TypeArgument,
    format: Annotated[str | None, typer.Option("--format", help="New template ({SEQ} padding only).")] = None,
    time_zone: Annotated[str | None, typer.Option(help="IANA time zone of periods.")] = None,
    max_value: Annotated[int | None, typer.Option(help="Largest sequence value.")] = None,
    ttl: Annotated[str | None, typer.Option("--ttl", help="Reservation lifetime.")] = None,
    lock_timeout: Annotated[str | None, typer.Option(help="Longest wait for a counter.")] = None,
    allow_override: Annotated[
        bool | None, typer.Option("--allow-override/--no-allow-override", help="Allow manual numbers.")
    ] = None,
    metadata: Annotated[str | None, typer.Option(help="JSON object stored with the type.")] = None,
    actor: Actor = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded in the audit log).")] = None,
    as_json: AsJson = False,
) -> None:
    """Change a document type; options left out stay as they are (scope and reset never change)."""
    meta = _metadata(metadata)
    with numbering(ctx) as client:
        changed = client.alter_type(
            code,
            format=format,
            time_zone=time_zone,
            max_value=max_value,
            reservation_ttl=ttl,
            lock_timeout=lock_timeout,
            allow_manual_override=allow_override,
            metadata=meta,
            actor=actor,
            reason=reason,
        )
    if as_json:
        print_json(type_record(changed))
    else:
        out.print(type_table(changed))


@app.command(epilog="Example: docnum reserve RFA --scope PRJ-7 --ttl '10 minutes' --json")
def reserve(
    ctx: typer.Context,
    document_type: TypeArgument,
    scope: ScopeValue = None,
    actor: Actor = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Hold the number this long: seconds or e.g. '10 minutes'.")
    ] = None,
    document_date: DocumentDate = None,
    as_json: AsJson = False,
) -> None:
    """Reserve the next number; confirm or cancel it with the token it prints."""
    with numbering(ctx) as client:
        held = client.reserve(
            document_type, scope=scope, actor=actor, ttl=ttl, document_date=_day(document_date)
        )
    leave_behind(
        ctx,
        lambda: (
            f"1 reservation made by this command ({held.document_number}) will expire at"
            f" {held.expires_at.isoformat(timespec='seconds')}; confirm or cancel it: docnum confirm|cancel"
            f" {held.token}"
        ),
    )
    if as_json:
        print_json(dataclasses.asdict(held))
        return
    table = Table(show_header=False, box=None)
    table.add_row("number", f"[bold]{escape(held.document_number)}[/bold]")
    table.add_row("token", str(held.token))
    table.add_row("sequence", str(held.sequence_value))
    table.add_row("expires", held.expires_at.isoformat(timespec="seconds"))
    out.print(table)


@app.command(epilog="Example: docnum confirm 0b7e...-token --ref DOC-1")
def confirm(
    ctx: typer.Context,
    token: Token,
    actor: Actor = None,
    ref: Annotated[str | None, typer.Option("--ref", help="Reference of the document that uses it.")] = None,
    as_json: AsJson = False,
) -> None:
    """Confirm a reservation; prints the number."""
    with numbering(ctx) as client:
        number = client.confirm(token, actor=actor, document_ref=ref)
    _number(as_json, number, state="confirmed", token=str(token))


@app.command(epilog="Example: docnum cancel 0b7e...-token --reason 'draft abandoned'")
def cancel(
    ctx: typer.Context,
    token: Token,
    actor: Actor = None,
    reason: Annotated[str | None, typer.Option(help="Why the number is given up.")] = None,
    as_json: AsJson = False,
) -> None:
    """Cancel a reservation (the number is never issued again); prints the number."""
    with numbering(ctx) as client:
        number = client.cancel(token, actor=actor, reason=reason)
    _number(as_json, number, state="cancelled", token=str(token))


@app.command("next", epilog="Example: docnum next COR --actor alice --ref DOC-1")
def next_number(
    ctx: typer.Context,
    document_type: TypeArgument,
    scope: ScopeValue = None,
    actor: Actor = None,
    ref: Annotated[str | None, typer.Option("--ref", help="Reference of the document that uses it.")] = None,
    document_date: DocumentDate = None,
    as_json: AsJson = False,
) -> None:
    """Issue and confirm the next number in one step; prints it."""
    with numbering(ctx) as client:
        number = client.next_number(
            document_type, scope=scope, actor=actor, document_ref=ref, document_date=_day(document_date)
        )
    _number(as_json, number, document_type=document_type, state="confirmed")


@app.command("next-batch", epilog="Example: docnum next-batch INV 100 --actor billing-run")
def next_batch(
    ctx: typer.Context,
    document_type: TypeArgument,
    count: Annotated[int, typer.Argument(metavar="COUNT", help="How many numbers, 1 to 10000.")],
    scope: ScopeValue = None,
    actor: Actor = None,
    document_date: DocumentDate = None,
    as_json: AsJson = False,
) -> None:
    """Issue and confirm the next COUNT numbers of one counter in one step; prints one number per line.

    All or nothing: past max_value (NB002) nothing is issued. A batch takes no request key.
    """
    with numbering(ctx) as client:
        numbers = client.next_numbers(
            document_type, count, scope=scope, actor=actor, document_date=_day(document_date)
        )
    if as_json:
        print_json([{"document_number": number, "state": "confirmed"} for number in numbers])
    else:
        for number in numbers:
            typer.echo(number)


@app.command(epilog="Example: docnum expire")
def expire(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Expire every reservation past its expiry time; prints how many."""
    with numbering(ctx) as client:
        expired = client.expire_reservations()
    if as_json:
        print_json({"expired": expired})
    else:
        say(ctx, f"expired {_plural(expired, 'reservation')}")


@app.command(epilog="Example: docnum history RFA/PRJ-7/2025/0042")
def history(
    ctx: typer.Context,
    document_number: NumberArgument,
    as_json: AsJson = False,
) -> None:
    """Show the audit trail of a number (and of the numbers it replaced or was replaced by), oldest first.

    On a terminal a table; into a pipe or a file one tab-separated line per operation (time, operation,
    number, actor, reason, details), nothing cut.
    """
    with numbering(ctx) as client:
        entries = client.history(document_number)
    if as_json:
        print_json([dataclasses.asdict(entry) for entry in entries])
    elif not entries:
        say(ctx, f"no audit entries for {document_number}")
    elif out.is_terminal:
        out.print(history_table(entries, title=document_number))
    else:
        for line in history_lines(entries):
            typer.echo(line)


# -- administration of numbers and counters --------------------------------------------------------------


@app.command(epilog="Example: docnum override RFA PRJ-7/RFA/2025/0100 --reason 'paper register'")
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
    as_json: AsJson = False,
) -> None:
    """Record a number chosen by a person (the type must allow manual override); prints it."""
    with numbering(ctx) as client:
        number = client.override(
            document_type, document_number, actor=actor, reason=reason, skip_validation=skip_validation
        )
    _number(as_json, number, document_type=document_type, state="overridden")


@app.command(epilog="Example: docnum void COR-2025-00042 --reason 'sent twice'")
def void(
    ctx: typer.Context,
    document_number: NumberArgument,
    reason: Reason,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    """Void a confirmed, overridden or imported number (it is never issued again); prints it."""
    with numbering(ctx) as client:
        number = client.void(document_number, actor=actor, reason=reason)
    _number(as_json, number, state="voided")


@app.command(epilog="Example: docnum replace COR-2025-00042 --reason 'typo in the title'")
def replace(
    ctx: typer.Context,
    document_number: NumberArgument,
    reason: Reason,
    actor: Actor = None,
    as_json: AsJson = False,
) -> None:
    """Void a number and issue its replacement in the same counter; prints the new number."""
    with numbering(ctx) as client:
        number = client.void_and_replace(document_number, actor=actor, reason=reason)
    _number(as_json, number, replaces=document_number, state="confirmed")


@app.command(
    "set", epilog="Example: docnum set RFA 120 --scope PRJ-7 --period 2025 --reason 'paper register'"
)
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
    as_json: AsJson = False,
) -> None:
    """Set a counter. Values jumped over are recorded; values the ledger holds are never issued again."""
    with numbering(ctx) as client:
        new_value = client.set_counter(
            document_type, scope=scope, period=period, value=value, actor=actor, reason=reason
        )
    if as_json:
        print_json(
            {
                "document_type": document_type,
                "scope_value": scope,
                "period": period,
                "current_value": new_value,
            }
        )
        return
    counter = " ".join(part for part in (document_type, scope, period) if part)
    say(ctx, f"counter {counter} set to {new_value}")


# -- legacy import ---------------------------------------------------------------------------------------


@app.command("import", epilog="Example: docnum import legacy.csv --actor migration --batch-size 1000")
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
        int,
        typer.Option(
            "--batch-size",
            min=1,
            max=10000,
            help="Rows per call (at most 10,000); each is its own transaction.",
        ),
    ] = 5000,
    as_json: AsJson = False,
) -> None:
    """Import legacy numbers from a CSV file, in batches; re-running it changes nothing already imported.

    Rejected rows are listed with the line of the file they start on, and make the exit status 1.
    """
    try:
        source = LegacyCsv(file)
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise typer.BadParameter(str(exc), param_hint="'FILE.csv'") from exc
    summary = ImportSummary()
    leave_behind(ctx, summary.stopped)
    progress = Progress(
        TextColumn("importing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal or target(ctx).quiet,
    )
    with numbering(ctx) as client, progress:
        task = progress.add_task("import", total=max(source.size, 1), rows=0)

        def advance(done: ImportSummary) -> None:
            progress.update(task, completed=source.bytes_read, rows=done.rows)

        try:
            import_file(
                client,
                source,
                batch_size=batch_size,
                actor=actor,
                summary=summary,
                on_batch=advance,
                keep_rejected=None if as_json else REJECTED_SHOWN,
            )
        except Exception as exc:
            progress.stop()
            typer.echo(summary.stopped(), err=True)
            if isinstance(exc, UnicodeDecodeError | csv.Error):
                raise CommandError("file", f"{file}: {exc}", hint="The file must be UTF-8 CSV.") from None
            raise
        finally:
            progress.stop()
    if as_json:
        record = {name: getattr(summary, name) for name in ("rows", "batches", "imported", "already_present")}
        record["rejected"] = summary.rejected
        record["rejected_rows"] = [
            {"line": line, **dataclasses.asdict(result)} for line, result in summary.rejected_rows
        ]
        record["seconds"] = round(summary.seconds, 3)
        print_json(record)
    else:
        say(ctx, _import_summary(summary))
        if summary.rejected_rows:
            from docnum.cli.render import rejected_table

            out.print(rejected_table(summary.rejected_rows))
            hidden = summary.rejected - len(summary.rejected_rows)
            if hidden:
                typer.echo(f"... and {hidden:,} more rejected rows not shown")
    if summary.rejected:
        raise typer.Exit(EXIT_FINDING)


def _import_summary(summary: ImportSummary) -> str:
    rate = f", {summary.rows / summary.seconds:,.0f} rows/s" if summary.seconds > 0 else ""
    batches = _plural(summary.batches, "batch", "batches")
    return (
        f"imported {summary.imported:,}, already present {summary.already_present:,},"
        f" rejected {summary.rejected:,} ({summary.rows:,} rows in {batches}, {summary.seconds:.1f} s{rate})"
    )


# -- reports ---------------------------------------------------------------------------------------------


@app.command(epilog="Example: docnum status RFA --json")
def status(ctx: typer.Context, document_type: OptionalTypeArgument = None, as_json: AsJson = False) -> None:
    """Show every counter: its value, utilisation and numbers by state."""
    with numbering(ctx) as client:
        require_type(client, document_type)
        counters = client.status(document_type)
    if as_json:
        print_json([dataclasses.asdict(counter) for counter in counters])
    elif not counters:
        say(ctx, f"no counters{f' for {document_type}' if document_type else ''}")
    else:
        out.print(status_table(counters))


@app.command(epilog="Example: docnum gaps RFA --scope PRJ-7 --period 2025")
def gaps(
    ctx: typer.Context,
    document_type: OptionalTypeArgument = None,
    scope: ScopeValue = None,
    period: Period = None,
    as_json: AsJson = False,
) -> None:
    """List ranges of counter values never issued, each with its recorded reason (or none: unexplained)."""
    ranges = values = unexplained = 0
    with numbering(ctx) as client:
        require_type(client, document_type)
        # Printed as they come from a server-side cursor: any number of ranges fits in memory.
        with closing(client.iter_gaps(document_type, scope=scope, period=period)) as stream:
            for gap in stream:
                if as_json:
                    item = json_item(dataclasses.asdict(gap))
                    typer.echo(("[\n" if ranges == 0 else ",\n") + item, nl=False)
                else:
                    if ranges == 0:
                        out.print(GAP_HEADER, highlight=False, soft_wrap=True)
                    out.print(gap_line(gap), highlight=False, soft_wrap=True)
                ranges += 1
                values += gap.value_count
                unexplained += 0 if gap.explained else gap.value_count
    if as_json:
        typer.echo("[]" if ranges == 0 else "\n]")
    elif ranges == 0:
        say(ctx, "no gaps")
    else:
        say(
            ctx,
            f"{_plural(values, 'value')} never issued in {_plural(ranges, 'range')};"
            f" {unexplained:,} unexplained",
        )


@app.command("check-duplicates", epilog="Example: docnum check-duplicates --json")
def check_duplicates(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Find numbers used twice in the ledger or in the registered application tables; exit 1 if any."""
    with numbering(ctx) as client:
        duplicates = client.check_duplicates()
    if as_json:
        print_json([dataclasses.asdict(duplicate) for duplicate in duplicates])
    elif not duplicates:
        say(ctx, "no duplicate numbers")
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
        raise typer.Exit(EXIT_FINDING)


@app.command(epilog="Example: docnum validate --json")
def validate(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Run the integrity checks; exit 1 when the report is not empty."""
    with numbering(ctx) as client:
        findings = client.validate()
    if as_json:
        print_json([dataclasses.asdict(finding) for finding in findings])
    elif not findings:
        say(ctx, "healthy: no findings")
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
        say(ctx, f"{errors} error(s), {len(findings) - errors} warning(s)")
    if findings:
        raise typer.Exit(EXIT_FINDING)


@app.command(
    "audit-export",
    epilog="Example: docnum audit-export --start 2025-01-01 --end 2025-03-31 --format jsonl -o q1.jsonl",
)
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
    with numbering(ctx) as client:
        require_type(client, document_type)
        # Closed before the connection, whatever happens: the stream's cursor lives in a transaction.
        with closing(client.audit_export(first, last, document_type)) as entries:
            if to_stdout:
                written = write_export(entries, sys.stdout, fmt)
            else:
                try:
                    written = write_file_atomically(output, lambda handle: write_export(entries, handle, fmt))
                except ExportFileError as exc:
                    raise CommandError(
                        "file", str(exc.strerror), hint="Choose an --output in a directory you can write."
                    ) from None
    summary = (
        f"wrote {_plural(written, 'audit row')}"
        f" ({first.isoformat()} <= occurred_at < {last.isoformat()}) to {'stdout' if to_stdout else output}"
    )
    say(ctx, summary, err=to_stdout)


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


@app.command(epilog="Example: docnum demo --reservations 500 --workers 60")
def demo(
    ctx: typer.Context,
    reservations: Annotated[int, typer.Option(min=10, help="Concurrent reservations of BOQ numbers.")] = 200,
    workers: Annotated[int, typer.Option(min=2, max=90, help="Threads, and connections in the pool.")] = 60,
) -> None:
    """Run the high-load scenario (hundreds of concurrent reservations) and prove the result gapless."""
    from docnum.cli import demo as demo_module

    with reported():
        dsn = target(ctx).dsn()
        passed = demo_module.run(dsn, out, reservations=reservations, workers=workers)
    if not passed:
        raise typer.Exit(EXIT_FINDING)


from docnum.cli.ops import register  # noqa: E402  (the server, dsn, psql, doctor and sweep commands)

register(app)

from docnum.cli.metrics import register as register_metrics  # noqa: E402

register_metrics(app)

from docnum.cli.load import register as register_load  # noqa: E402

register_load(app)

from docnum.cli.serve import register as register_serve  # noqa: E402

register_serve(app)
