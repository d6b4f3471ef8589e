"""Test helpers shared by every test module (import with `from helpers import ...`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


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
