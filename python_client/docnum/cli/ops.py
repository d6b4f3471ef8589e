"""Commands for working with the database: ``server``, ``dsn``, ``psql``, ``doctor`` and ``sweep``.

``docnum.cli`` registers them at its end (``register(app)``). They use the CLI's shared helpers of
:mod:`docnum.cli.support`: ``reported`` for one-line errors, ``print_json``, ``target`` (the ``Target`` of
``--dsn``/``$DOCNUM_DSN`` and ``--quiet``) and the ``out`` console.

Exit codes: 0 ok, 1 a failure or a finding (a failed doctor check, a refused ``server stop``), 2 usage, and
``docnum server status`` exits 3 when the embedded server is not running (as ``pg_ctl status`` does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from types import FrameType
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import typer
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from docnum import queries
from docnum.cli.support import APPLICATION_NAME, CommandError, is_quiet, out, print_json, reported, target

__all__ = ["Check", "doctor_checks", "mask_password", "parse_duration", "register"]

#: `docnum server status` when the server is not running (pg_ctl status, systemctl status and LSB say 3).
EXIT_NOT_RUNNING = 3

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]

server_app = typer.Typer(
    name="server",
    help="Start, stop and inspect the embedded PostgreSQL (DOCNUM_DATA_DIR; --dsn does not apply).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``docnum`` application."""
    app.add_typer(server_app, name="server")
    app.command("dsn")(dsn)
    app.command(
        "psql",
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": ["--help"],
        },
    )(psql)
    app.command("doctor")(doctor)
    app.command("sweep")(sweep)


# -- the embedded server -----------------------------------------------------------------------------------


def _state_dict(state: Any) -> dict[str, Any]:
    return dataclasses.asdict(state)


def _print_state(state: Any, *, as_json: bool) -> None:
    if as_json:
        print_json(_state_dict(state))
        return
    if not state.running:
        out.print(f"embedded server: not running (data directory {state.data_dir})", soft_wrap=True)
        return
    kept = "kept running until `docnum server stop`" if state.kept else "started for a command"
    rows = [
        ("embedded server", f"running ({kept})"),
        ("data directory", state.data_dir),
        ("pid", str(state.pid)),
        ("version", state.version or "?"),
        ("uri", state.uri or "?"),
        ("client sessions", "?" if state.sessions is None else str(state.sessions)),
    ]
    if state.system_user:
        rows.append(("system user", state.system_user))
    for label, value in rows:
        out.print(f"{label + ':':<17}{value}", soft_wrap=True, highlight=False)


@server_app.command("start")
def server_start(as_json: AsJson = False) -> None:
    """Start the embedded server and keep it running after this command, until `docnum server stop`.

    Example: docnum server start && docnum psql
    """
    from docnum.ops import embedded

    with reported():
        embedded.keep_running()
        state = embedded.server_state()
    _print_state(state, as_json=as_json)


@server_app.command("stop")
def server_stop(
    force: Annotated[
        bool, typer.Option("--force", help="Stop even while clients are connected (their sessions end).")
    ] = False,
) -> None:
    """Stop the embedded server; refused (exit 1) while other clients use it, unless --force.

    Example: docnum server stop
    """
    from docnum.ops import embedded

    with reported():
        try:
            stopped = embedded.stop_server(force=force)
        except embedded.ServerInUse as exc:
            message, _, hint = str(exc).partition("\n")
            raise CommandError("server", message, hint=hint or None) from None
    out.print("embedded server stopped" if stopped else "embedded server was not running")


@server_app.command("status")
def server_status(as_json: AsJson = False) -> None:
    """Whether the embedded server runs, its data directory, pid, version and URI; exit 3 when it is not
    running.

    Example: docnum server status --json
    """
    from docnum.ops import embedded

    with reported():
        state = embedded.server_state()
    _print_state(state, as_json=as_json)
    if not state.running:
        raise typer.Exit(EXIT_NOT_RUNNING)


# -- dsn and psql ----------------------------------------------------------------------------------------


def mask_password(dsn: str) -> str:
    """``dsn`` with its password (in a URI's user part, or a ``password`` parameter) shown as ``****``."""
    if re.match(r"^postgres(ql)?://", dsn):
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            credentials, _, hosts = netloc.rpartition("@")
            user, colon, password = credentials.partition(":")
            if colon and password:
                netloc = f"{user}:****@{hosts}"
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(key == "password" for key, _ in query):
            masked = [(key, "****" if key == "password" else value) for key, value in query]
            return urlunsplit(parts._replace(netloc=netloc, query=urlencode(masked, safe="/*")))
        return urlunsplit(parts._replace(netloc=netloc))
    params = conninfo_to_dict(dsn)
    if params.get("password"):
        params["password"] = "****"
    return make_conninfo("", **params)


def _database_in_use(ctx: typer.Context) -> str:
    """The DSN of ``--dsn``/``$DOCNUM_DSN``, else the embedded server's URI, kept running (a URI is only of
    use while its server runs) and with schema docnum installed."""
    chosen = target(ctx)
    if chosen.dsn_option:
        return chosen.dsn_option
    from docnum.ops import embedded

    embedded.keep_running()
    return chosen.dsn()


def dsn(
    ctx: typer.Context,
    show_password: Annotated[
        bool, typer.Option("--show-password", help="Print the password as it is.")
    ] = False,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Another role to log in as, on the same server and database."),
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="That role's password (printed as given).")
    ] = None,
) -> None:
    """Print the connection URI of the database in use (the embedded server is started and kept running).

    Example: psql "$(docnum dsn)"; DOCNUM_DSN="$(docnum dsn --user docnum_authenticator --password change-me)"
    """
    if password is not None and user is None:
        raise typer.BadParameter("it goes with --user NAME", param_hint="--password")
    with reported():
        value = _database_in_use(ctx)
    if user is not None:
        typer.echo(with_login(value, user, password))
        return
    typer.echo(value if show_password else mask_password(value))


def with_login(dsn: str, user: str, password: str | None) -> str:
    """``dsn`` (a URI or key=value conninfo) logging in as ``user`` with ``password`` (none when None)."""
    if not re.match(r"^postgres(ql)?://", dsn):
        return make_conninfo(dsn, user=user, password=password)
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2]
    credentials = quote(user, safe="") + ("" if password is None else ":" + quote(password, safe=""))
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("user", "password")
    ]
    return urlunsplit(parts._replace(netloc=f"{credentials}@{hosts}", query=urlencode(query, safe="/")))


def _psql_program(dsn_given: bool) -> str:
    """The embedded server's psql, else (with DOCNUM_DSN) the one on PATH."""
    from docnum.ops import embedded

    try:
        bundled = embedded.pg_bindir() / "psql"
    except embedded.EmbeddedServerMissing:
        if not dsn_given:
            raise
        bundled = None
    if bundled is not None and bundled.exists():
        return str(bundled)
    found = shutil.which("psql")
    if found is None:
        raise FileNotFoundError("psql is not installed: install the PostgreSQL client (or docnum[embedded])")
    return found


def psql(ctx: typer.Context) -> None:
    """Open psql on the database in use; further arguments go to psql.

    Example: docnum psql -c "SELECT * FROM docnum.validate()"
    """
    with reported():
        given = bool(target(ctx).dsn_option)
        value = _database_in_use(ctx)
        program = _psql_program(given)
    from docnum.ops import embedded

    for path in list(embedded._servers):  # this process becomes psql: it no longer uses the server itself
        embedded.release(path)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(program, [program, "--dbname", value, *ctx.args])


# -- doctor ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
    """One finding of ``docnum doctor``: ``status`` is ok, warn or fail."""

    check: str
    status: str
    detail: str


def _migrations(conn: psycopg.Connection[Any]) -> Check:
    from docnum.ops import schema

    state = schema.read_state(conn)
    if state.at_head:
        return Check("migrations", "ok", state.describe())
    if not state.installed:
        return Check("migrations", "fail", f"{state.describe()}: run `docnum migrate`")
    if not state.versioned or not state.readable:
        return Check("migrations", "warn", state.describe(conn.info.user))
    return Check("migrations", "fail", f"{state.describe()}: run `docnum migrate`")


def _catalog(conn: psycopg.Connection[Any]) -> list[Check]:
    """The checks the database runs itself (docnum.doctor(): roles, grants, search paths, validate(), held
    counters, durability, standbys), as a DBA sees them in psql."""
    user = conn.info.user
    exists, allowed = conn.execute(queries.DOCTOR_STATE).fetchone() or (False, False)
    if not exists:
        return [Check("doctor", "fail", "docnum.doctor() is missing: the schema is behind: `docnum migrate`")]
    if not allowed:
        return [Check("doctor", "warn", f"{user} may not run docnum.doctor(): GRANT docnum_reader TO {user}")]
    rows = conn.execute(queries.DOCTOR, {"run_validate": True}).fetchall()
    # the recorded revision is the migrations check's business, beside the package's head
    return [Check(name, status, detail) for name, status, detail in rows if name != "revision"]


def _installer(conn: psycopg.Connection[Any], installed: bool) -> list[Check]:
    """What the connected role can do with docnum itself: install or upgrade it (the requirements of
    migrations/session.sql's pg_temp.docnum_installer, checked in a transaction that is rolled back), grant
    its roles to logins; and who else may become docnum_owner."""
    from docnum.ops.schema import migrations_dir

    action = "upgrade" if installed else "install"
    try:
        with conn.transaction(force_rollback=True):
            conn.execute((migrations_dir() / "session.sql").read_bytes())
            rows = conn.execute(
                "SELECT requirement, ok, detail, hint FROM pg_temp.docnum_installer(false)"
            ).fetchall()
            grantable = conn.execute(
                "SELECT r.rolname, s.rolsuper OR (current_setting('server_version_num')::int < 160000"
                "   AND s.rolcreaterole) OR pg_catalog.pg_has_role(r.rolname, 'MEMBER WITH ADMIN OPTION')"
                " FROM pg_catalog.pg_roles r, pg_catalog.pg_roles s WHERE s.rolname = current_user"
                "   AND r.rolname IN ('docnum_app', 'docnum_reader', 'docnum_admin') ORDER BY 1"
            ).fetchall()
    except psycopg.errors.ReadOnlySqlTransaction:
        return [Check(action, "warn", "a read-only server: docnum is installed and upgraded on the primary")]
    user = conn.info.user
    unmet = [(detail, hint) for _, met, detail, hint in rows if met is False]
    if unmet:
        detail, hint = unmet[0]
        more = f" (and {len(unmet) - 1} more)" if len(unmet) > 1 else ""
        checks = [Check(action, "warn", f"{user} may not {action} docnum: {detail}{more}; {hint}")]
    else:
        checks = [Check(action, "ok", f"{user} may {action} docnum (`docnum migrate`)")]
    denied = [role for role, may in grantable if not may]
    if not grantable:
        checks.append(Check("grant", "ok", "docnum's roles are made by `docnum migrate`"))
    elif denied:
        checks.append(
            Check("grant", "warn", f"{user} may not grant {', '.join(denied)} to logins (no ADMIN option)")
        )
    else:
        checks.append(Check("grant", "ok", f"{user} may grant docnum_app, docnum_reader and docnum_admin"))
    others = [detail for requirement, _, detail, _ in rows if requirement == "other member"]
    if others:
        checks.append(
            Check(
                "docnum_owner members",
                "warn",
                "; ".join(others)
                + ": such a role can change docnum's data at will; REVOKE docnum_owner from it"
                " unless it installs docnum in another database",
            )
        )
    return checks


def doctor_checks(dsn_value: str) -> list[Check]:
    """Every check of ``docnum doctor`` on the database at ``dsn_value``: the schema against the package's
    head and what the connected role may install (which only the package knows), then docnum.doctor()."""
    with psycopg.connect(dsn_value, autocommit=True, application_name=APPLICATION_NAME) as conn:
        checks = [_migrations(conn)]
        if checks[0].status == "fail" and "not installed" in checks[0].detail:
            return [*checks, *_installer(conn, installed=False)]
        checks += _installer(conn, installed=True)
        checks += _catalog(conn)
    return checks


_STYLES = {"ok": "green", "warn": "yellow", "fail": "red"}


def doctor(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Check the database: migrations, roles and grants, validate(), held counters, durability; exit 1 when a
    check fails (warnings exit 0).

    Example: docnum doctor --json
    """
    from rich.markup import escape

    with reported():
        checks = doctor_checks(target(ctx).dsn(install_schema=False))
    if as_json:
        print_json([dataclasses.asdict(check) for check in checks])
    else:
        for check in checks:
            style = _STYLES[check.status]
            out.print(
                f"[{style}]{check.status:<4}[/{style}]  {check.check:<21} {escape(check.detail)}",
                soft_wrap=True,
                highlight=False,
            )
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(1)


# -- sweep -----------------------------------------------------------------------------------------------

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in ``30``, ``30s``, ``5m``, ``1h`` or ``0.5s``; BadParameter otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 5m or 1h", param_hint="'--every'")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _expire_once(dsn_value: str) -> int:
    from docnum.client import Numbering

    with psycopg.connect(dsn_value, application_name=APPLICATION_NAME) as conn:
        return Numbering(conn).expire_reservations()


def on_signals(stop: threading.Event) -> Callable[[], None]:
    """Make SIGINT and SIGTERM set ``stop``; returns a function that restores the previous handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def sweep(
    ctx: typer.Context,
    every: Annotated[
        str, typer.Option("--every", help="Interval between runs: seconds, or e.g. 30s, 5m, 1h.")
    ] = "60s",
    once: Annotated[bool, typer.Option("--once", help="Run once and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per run.")] = False,
) -> None:
    """Expire reservations past their expiry time, every --every until SIGINT or SIGTERM (then exit 0).

    A failed run (the database restarting, say) is reported on stderr and the loop goes on; with --once it
    exits 1. Example: docnum sweep --every 5m
    """
    interval = parse_duration(every)
    with reported():
        dsn_value = target(ctx).dsn()
    stop = threading.Event()
    restore = on_signals(stop)
    try:
        while not stop.is_set():
            at = datetime.now(timezone.utc).astimezone()
            try:
                expired = _expire_once(dsn_value)
            except psycopg.Error as exc:
                if once:
                    with reported():
                        raise
                message = (exc.diag.message_primary or str(exc)).splitlines()[0]
                typer.echo(f"error {exc.sqlstate or type(exc).__name__}: {message}", err=True)
            else:
                if as_json:
                    typer.echo(json.dumps({"at": at.isoformat(timespec="seconds"), "expired": expired}))
                elif not (quiet or is_quiet(ctx)):
                    plural = "" if expired == 1 else "s"
                    typer.echo(f"{at:%Y-%m-%d %H:%M:%S} expired {expired} reservation{plural}")
            if once:
                break
            stop.wait(interval)
    finally:
        restore()
