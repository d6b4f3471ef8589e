"""The database side of the HTTP API: one pool of a login role that may only become the three docnum roles.

Every request runs in one transaction on a pooled connection, which first becomes the token's role
(``set_config('role', ..., true)``, i.e. ``SET LOCAL ROLE``) and publishes the token's claims as
``request.jwt.claims`` (as PostgREST does); then one of the Python client's calls runs, built by
``docnum.calls`` and run by the client itself (one way to run a call), and PostgreSQL's grants decide what
the caller may do.  Both settings end with the transaction: nothing of one request survives on the
connection, and the pool works behind PgBouncer in transaction mode.

A serialization failure or deadlock (for example two concurrent retries of one ``Idempotency-Key``: the one
that loses learns the key was served meanwhile) reruns the whole transaction, with the client's policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from docnum import queries
from docnum.calls import SET_LOCAL, Call
from docnum.client import AsyncNumbering
from docnum.http.auth import ROLES, Principal
from docnum.ops import schema

__all__ = ["APPLICATION_NAME", "Database"]

log = logging.getLogger("docnum.http")

T = TypeVar("T")

APPLICATION_NAME = "docnum-http"
#: Seconds a readiness answer is reused for (see Database.readiness).
READINESS_REUSE_S = 1.0


class Database:
    """A connection pool and the per-request transaction of the HTTP API."""

    def __init__(self, dsn: str, *, min_size: int = 2, max_size: int = 20, timeout: float = 5.0) -> None:
        self.dsn = dsn
        self._readiness_lock = asyncio.Lock()
        self._readiness: dict[str, Any] = {}
        self._readiness_at = float("-inf")
        self._sweeping = False
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            name="docnum-http",
            # A connection the server ended (a restart, a terminated backend) is found before a request gets
            # it, not by the request: one round trip per checkout (see _check).
            check=self._check,
            # No server-side prepared statements: safe behind a transaction pooler (see docnum.client).
            # autocommit: each request says BEGIN and COMMIT itself (see call()).
            kwargs={"application_name": APPLICATION_NAME, "prepare_threshold": None, "autocommit": True},
        )
        self._numbering = AsyncNumbering(self.pool)

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's check of a connection it is about to hand out. When one has died, the others most
        likely died with it (the server restarted, or an operator ended the backends): they are all checked
        at once, and replaced, rather than found one by one, each after a longer pause of the pool's."""
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if not self._sweeping:
                self._sweeping = True
                try:
                    await self.pool.check()
                finally:
                    self._sweeping = False
            raise

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    @staticmethod
    def _settings(principal: Principal) -> dict[str, str]:
        """The token's role and claims, as run-time parameters of one transaction."""
        if principal.role not in ROLES:  # auth.Verifier already refused it; never trust a caller with this
            raise ValueError(f"refusing to switch to role {principal.role!r}")
        return {"role": principal.role, "request.jwt.claims": json.dumps(dict(principal.claims), default=str)}

    async def call(self, principal: Principal, call: Call[T]) -> T:
        """Run one of the client's calls in its own transaction as ``principal``; return its result.

        It runs the way every call of the Python client runs (:meth:`AsyncNumbering.run`): BEGIN, the role
        and claims, the call and COMMIT in one round trip, the transaction retried as a whole after a
        serialization failure or a deadlock.
        """
        return await self._numbering.with_settings(self._settings(principal)).run(call)

    @asynccontextmanager
    async def session(
        self, principal: Principal, *, idle_timeout_s: int | None = None
    ) -> AsyncIterator[AsyncNumbering]:
        """A client bound to one transaction as ``principal`` for the ``async with`` block (never retried).

        With ``idle_timeout_s``, PostgreSQL ends the transaction (and the connection) should this process
        leave it idle that long, whatever becomes of the process: a backstop for long-lived sessions
        (exports).
        """
        async with self.pool.connection() as conn, conn.transaction():
            for name, value in self._settings(principal).items():
                await conn.execute(SET_LOCAL, (name, value), prepare=False)
            if idle_timeout_s is not None:
                await conn.execute(
                    "SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                    (f"{idle_timeout_s}s",),
                    prepare=False,
                )
            yield AsyncNumbering(conn)

    async def readiness(self, exports: int = 0) -> dict[str, Any]:
        """Whether this server can serve, and if not why: the database reachable (on a connection of its
        own, so that a busy pool is not taken for a database that is down), schema docnum at the
        migrations' head, not a standby, and a pool connection free or soon free."""
        # /readyz needs no token: one check at a time, and its answer reused for a second, so that no number
        # of probes opens more than one connection.
        async with self._readiness_lock:
            now = asyncio.get_running_loop().time()
            if now - self._readiness_at > READINESS_REUSE_S:
                self._readiness = await self._connect_and_check()
                self._readiness_at = asyncio.get_running_loop().time()
            checks = dict(self._readiness)
        checks["pool"] = self._pool_check(exports)
        return checks

    async def _connect_and_check(self) -> dict[str, Any]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, connect_timeout=2, autocommit=True, application_name=APPLICATION_NAME
            )
        except (psycopg.Error, OSError) as exc:
            log.warning("readiness: database unreachable: %s", type(exc).__name__)
            return {"database": {"ok": False, "detail": "unreachable"}}
        async with conn:
            return await self._database_checks(conn)

    def _pool_check(self, exports: int) -> dict[str, Any]:
        stats = self.pool.get_stats()
        size, free = stats.get("pool_size", 0), stats.get("pool_available", 0)
        waiting, most = stats.get("requests_waiting", 0), stats.get("pool_max", self.pool.max_size)
        busy = size - free
        detail = (
            f"{busy} of {most} connections in use ({exports} by audit exports), {waiting} requests waiting"
        )
        return {"ok": not (busy >= most and waiting > 0), "detail": detail}

    @staticmethod
    async def _database_checks(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            row = await (await conn.execute("SELECT pg_is_in_recovery()", prepare=False)).fetchone()
            standby = bool(row and row[0])
            checks["database"] = {"ok": True}
            checks["primary"] = {"ok": not standby, "detail": "a standby" if standby else "read-write"}
            state = await schema.read_state_async(conn)
            # Installed from sql/ directly, there is nothing to compare with: doctor warns, this serves.
            ok = state.at_head or (state.installed and not state.versioned)
            checks["migrations"] = {"ok": ok, "detail": state.describe("the login role")}
            if state.installed:
                checks["doctor"] = await Database._doctor(conn)
        except (psycopg.Error, OSError) as exc:
            log.warning("readiness: database check failed: %s", type(exc).__name__)
            checks["database"] = {"ok": False, "detail": "unreachable"}
        return checks

    @staticmethod
    async def _doctor(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
        """What docnum.doctor() finds, validate() left out (its cost grows with the ledger), as docnum_reader.
        Never a reason to be unready: every instance would see the same database and all would leave."""
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_catalog.set_config('role', 'docnum_reader', true)", prepare=False
                )
                cur = await conn.execute(queries.DOCTOR, {"run_validate": False}, prepare=False)
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            return {"ok": True, "detail": f"not run ({exc.sqlstate or type(exc).__name__})"}
        found = [
            f"{name}: {detail}" for name, status, detail in rows if status != "ok" and name != "revision"
        ]
        return {"ok": True, "detail": "; ".join(found)[:2000] if found else "nothing to report"}

    async def login_role_warning(self) -> str | None:
        """A warning when the pool's login role can do more than switch to the three docnum roles."""
        try:
            async with self.pool.connection(timeout=30.0) as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT r.rolname, r.rolsuper, r.rolinherit FROM pg_catalog.pg_roles r"
                    " WHERE r.rolname = current_user",
                    prepare=False,
                )
                row = await cur.fetchone()
        except (psycopg.Error, OSError):
            return None
        if row is None:
            return None
        name, superuser, inherit = row
        if superuser:
            return (
                f"the pool logs in as {name}, a superuser: use a NOINHERIT login role granted only"
                " docnum_app, docnum_reader and docnum_admin (see docs/http-api.md)"
            )
        if inherit:
            return (
                f"the pool's login role {name} is INHERIT: make it NOINHERIT so it has no rights of its own"
            )
        return None
