"""The ``docnum`` command line: the SQL functions of docs/sql-api.md, one command each.

The database is ``--dsn`` or ``$DOCNUM_DSN``; with neither, docnum starts its embedded PostgreSQL (a per-user
data directory) and installs the schema there on first use, so every command works on a fresh machine.

An error prints one line, ``error NB004: <message>``, then the database's DETAIL and HINT indented, and
exits with status 1; usage errors exit with status 2.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from docnum import queries
from docnum.client import Numbering
from docnum.errors import DocnumError
from docnum.models import AuditEntry, DocumentType

__all__ = ["app"]

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
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _print_json(value: object) -> None:
    typer.echo(json.dumps(value, default=_json_value, ensure_ascii=False, indent=2))


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
    """Show the audit trail of a number, oldest first."""
    with _numbering(ctx) as numbering:
        entries = numbering.history(document_number)
    if as_json:
        _print_json([dataclasses.asdict(entry) for entry in entries])
        return
    if not entries:
        out.print(f"no audit entries for {document_number}")
        return
    out.print(history_table(entries, title=document_number))


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

    ``compact`` leaves out the audit id, the application and the date, for narrow summaries.
    """
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    columns = (
        ("time", "operation", "actor") if compact else ("id", "time", "operation", "actor", "application")
    )
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
            "actor": entry.actor or "",
            "application": entry.application_name or "",
        }
        table.add_row(*(cells[column] for column in columns), details)
    return table
