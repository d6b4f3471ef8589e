"""Test helpers shared by every test module (`from support.helpers import ...`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row


@dataclass(frozen=True)
class ServerInfo:
    """How to reach the test server as a superuser.

    `options` and `template_dbname` are there for pytest-postgresql: a noproc fixture with
    `depends_on="server_info"` reads its connection parameters from this object, and clones its template
    from `template_dbname` (None: the server's default, template1).
    """

    host: str | None
    port: int
    user: str
    password: str | None = None
    maintenance_dbname: str = "postgres"
    options: str = ""
    template_dbname: str | None = field(default=None)
    server_version: int = 0

    def dsn(self, dbname: str | None = None, **extra: Any) -> str:
        """A libpq conninfo string for `dbname` (default: the maintenance database)."""
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname or self.maintenance_dbname,
            **extra,
        )

    def connect(self, dbname: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection to `dbname` (default: the maintenance database)."""
        return psycopg.connect(self.dsn(dbname), **kwargs)

    def libpq_env(self) -> dict[str, str]:
        """Environment for client programs (pg_dump, psql, pgbench): the password goes in PGPASSWORD."""
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def conninfo_without_password(self, dbname: str) -> str:
        """Conninfo for a command line (use with `libpq_env()`, so the password is not in `ps` output)."""
        return make_conninfo(host=self.host, port=self.port, user=self.user, dbname=dbname)

    @contextmanager
    def scratch_database(self, dbname: str) -> Iterator[str]:
        """Create an empty database (from template0), yield its conninfo, drop it afterwards."""
        create_database(self, dbname)
        try:
            yield self.dsn(dbname)
        finally:
            drop_database(self, dbname)


def create_database(server: ServerInfo, dbname: str, template: str = "template0") -> None:
    with server.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(dbname), sql.Identifier(template))
        )


def drop_database(server: ServerInfo, dbname: str) -> None:
    """Drop a database, disconnecting whoever is still connected to it."""
    with server.connect(autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))


def wait_until_blocked(observer: psycopg.Connection[Any], blocked_pid: int, timeout: float = 10) -> list[int]:
    """Poll until backend `blocked_pid` waits on a lock; return the pids blocking it.

    `observer` is a separate connection, best in autocommit mode. Typical use: start the statement that must
    wait in a thread, call this with that connection's `info.backend_pid`, then release the lock holder.
    Raises TimeoutError (with what the backend was doing) if it is not blocked within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        row = observer.execute("SELECT pg_blocking_pids(%s)", (blocked_pid,)).fetchone()
        blockers: list[int] = list(row[0]) if row and row[0] else []
        if blockers:
            return blockers
        if time.monotonic() >= deadline:
            activity = observer.execute(
                "SELECT state, wait_event_type, wait_event, left(query, 200)"
                " FROM pg_stat_activity WHERE pid = %s",
                (blocked_pid,),
            ).fetchone()
            raise TimeoutError(
                f"backend {blocked_pid} was not blocked by another backend within {timeout}s; "
                f"pg_stat_activity (state, wait_event_type, wait_event, query): {activity}"
            )
        time.sleep(0.01)


# --- Calling the public SQL API -------------------------------------------------------------------
# Every call goes through docnum's public functions with named arguments, exactly as an application would:
# `call(conn, "reserve_number", document_type="COR", actor="u1")` runs
# `SELECT * FROM docnum.reserve_number(document_type => 'COR', actor => 'u1')` and returns the row as a dict.
# Python str values are sent untyped, so '5 minutes' reaches an interval parameter and '{}' a jsonb one.


def call_sql(function: str, arguments: dict[str, Any]) -> sql.Composed:
    """`SELECT * FROM docnum.<function>(name => %(name)s, ...)` for the given argument names."""
    named = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in arguments
    )
    return sql.SQL("SELECT * FROM docnum.{}({})").format(sql.Identifier(function), named)


def call(conn: psycopg.Connection[Any], function: str, **arguments: Any) -> dict[str, Any]:
    """Call docnum.<function> with named arguments; return its (single) result row as a dict."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(call_sql(function, arguments), arguments)
        row = cur.fetchone()
    assert row is not None, f"docnum.{function} returned no row"
    return row


def define(conn: psycopg.Connection[Any], code: str, fmt: str, **settings: Any) -> dict[str, Any]:
    """docnum.define_type(code => code, format => fmt, ...settings); returns the type row."""
    return call(conn, "define_type", code=code, format=fmt, **settings)


def reserve(conn: psycopg.Connection[Any], document_type: str | None, **arguments: Any) -> dict[str, Any]:
    """docnum.reserve_number(...): a dict with token, document_number, sequence_value, expires_at."""
    return call(conn, "reserve_number", document_type=document_type, **arguments)


def next_number(conn: psycopg.Connection[Any], document_type: str | None, **arguments: Any) -> str:
    return str(call(conn, "next_number", document_type=document_type, **arguments)["next_number"])


def confirm(conn: psycopg.Connection[Any], token: Any, **arguments: Any) -> str:
    return str(call(conn, "confirm_number", token=token, **arguments)["confirm_number"])


def cancel(conn: psycopg.Connection[Any], token: Any, **arguments: Any) -> str:
    return str(call(conn, "cancel_number", token=token, **arguments)["cancel_number"])


def expire_reservations(conn: psycopg.Connection[Any]) -> int:
    return int(call(conn, "expire_reservations")["expire_reservations"])


# --- Errors ---------------------------------------------------------------------------------------


def error_of(action: Callable[[], object]) -> psycopg.Error:
    """Run `action`, which must fail with a database error; return that error."""
    try:
        action()
    except psycopg.Error as error:
        return error
    raise AssertionError("expected a database error, but the call succeeded")


def sqlstate_of(action: Callable[[], object]) -> str | None:
    """The SQLSTATE `action` fails with, or None when it succeeds."""
    try:
        action()
    except psycopg.Error as error:
        return error.sqlstate
    return None


def expect_error(code: str, action: Callable[[], object]) -> psycopg.Error:
    """`action` must fail with SQLSTATE `code` and explain itself: a message, a DETAIL and a HINT."""
    error = error_of(action)
    assert error.sqlstate == code, f"expected SQLSTATE {code}, got {error.sqlstate}: {error}"
    diag = error.diag
    assert (diag.message_primary or "").strip(), f"{code} without a message"
    assert (diag.message_detail or "").strip(), f"{code} without a DETAIL: {diag.message_primary}"
    assert (diag.message_hint or "").strip(), f"{code} without a HINT: {diag.message_primary}"
    return error


# --- What the database holds ----------------------------------------------------------------------


def footprint(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Row counts of every table in schema docnum, plus the sum of all counter values.

    Equal footprints before and after a failed call show that it wrote nothing anywhere.
    """
    tables = conn.execute(
        "SELECT c.relname FROM pg_class c"
        " WHERE c.relnamespace = 'docnum'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1"
    ).fetchall()
    counts = {}
    for (table,) in tables:
        query = sql.SQL("SELECT count(*) FROM docnum.{}").format(sql.Identifier(table))
        row = conn.execute(query).fetchone()
        assert row is not None
        counts[str(table)] = int(row[0])
    row = conn.execute("SELECT coalesce(sum(current_value), 0) FROM docnum.counter").fetchone()
    assert row is not None
    counts["counter_values"] = int(row[0])
    return counts


def audit_rows(
    conn: psycopg.Connection[Any], where: str = "true", params: Any = None
) -> list[dict[str, Any]]:
    """docnum.audit_trail rows (audit_log and the ledger's allocations) matching `where`, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        query = sql.SQL("SELECT * FROM docnum.audit_trail WHERE {} ORDER BY audit_id").format(sql.SQL(where))
        cur.execute(query, params)
        return cur.fetchall()


def ledger_rows(conn: psycopg.Connection[Any], document_type: str | None = None) -> list[dict[str, Any]]:
    """docnum.ledger rows (of one type, or all), in issue order."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM docnum.ledger"
            " WHERE %(t)s::text IS NULL OR document_type = %(t)s ORDER BY number_id",
            {"t": document_type},
        )
        return cur.fetchall()


# --- Concurrency ----------------------------------------------------------------------------------


def in_thread(action: Callable[[], Any]) -> Future[Any]:
    """Start `action` on its own thread; the Future carries its result or its exception."""
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        return executor.submit(action)
    finally:
        executor.shutdown(wait=False)


# --- CI ---------------------------------------------------------------------------------------------


def in_ci() -> bool:
    """True under CI (.ci/run sets CI=true): a tool the suite needs and CI installs must be there, so its
    absence fails instead of skipping."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_or_skip(message: str) -> None:
    """Skip with `message` on a developer's machine; fail with it under CI."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
