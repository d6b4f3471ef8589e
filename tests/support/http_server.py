"""What the HTTP API tests share: a database per module, the login role, a real server process, tokens.

Not a test module of its own (it has no tests); the ``test_http_*`` modules import from it.  Each module
starts ONE ``python -m docnum serve`` process on a free loopback port (module-scoped), against a database
cloned from the session's migrated template, and talks to it with httpx.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from support.helpers import ServerInfo, create_database, drop_database

SECRET = "a-test-secret-long-enough-for-hs256-and-hs384-and-hs512-0123456789"
AUTHENTICATOR = "docnum_authenticator"
AUTHENTICATOR_PASSWORD = "authenticator-test-password"

#: The login role of the server's pool, as docs/http-api.md tells an operator to create it: NOINHERIT, so it
#: has no rights of its own, and a member of the three docnum roles, so it may switch to them and to nothing
#: else. (Roles are cluster-wide: created once, idempotently.)
CREATE_AUTHENTICATOR = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{AUTHENTICATOR}') THEN
        CREATE ROLE {AUTHENTICATOR} LOGIN NOINHERIT PASSWORD '{AUTHENTICATOR_PASSWORD}';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
-- (also when a migration made it NOLOGIN without a password: these tests log in with theirs)
ALTER ROLE {AUTHENTICATOR} LOGIN NOINHERIT PASSWORD '{AUTHENTICATOR_PASSWORD}';
GRANT docnum_app, docnum_reader, docnum_admin TO {AUTHENTICATOR};
"""


def token(role: str = "docnum_app", sub: str = "user-1", *, ttl: int = 600, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": sub, "role": role, "exp": int(time.time()) + ttl, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, algorithm="HS256")


def bearer(role: str = "docnum_app", sub: str = "user-1", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, sub, **claims)}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(dsn: str, log: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """``python -m docnum serve`` on a free loopback port; returns once /healthz answers."""
    port = free_port()
    environment = {**os.environ, "DOCNUM_DSN": dsn, "DOCNUM_JWT_SECRET": SECRET, **(env or {})}
    environment = {k: v for k, v in environment.items() if v}
    command = [sys.executable, "-m", "docnum", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [*command, "--no-access-log", *args], stdout=handle, stderr=subprocess.STDOUT, env=environment
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"docnum serve exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"docnum serve did not answer within 30 s:\n{server.output()}")
        time.sleep(0.05)


def stop_server(server: Server) -> str:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    output = server.output()
    assert "Exception in ASGI application" not in output, output  # every exception was answered
    return output


@dataclass
class HttpDatabase:
    name: str
    superuser_dsn: str
    login_dsn: str

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.superuser_dsn, **kwargs)


def module_database(
    server_info: ServerInfo, docnum_noproc: Any, request: pytest.FixtureRequest
) -> Iterator[HttpDatabase]:
    """A migrated database for a test module, and the login role the server's pool connects as: wrap it in a
    module-scoped fixture (``yield from module_database(server_info, docnum_noproc, request)``)."""
    name = f"docnum_http_{request.module.__name__.rsplit('_', 1)[-1]}_{uuid.uuid4().hex[:6]}"
    create_database(server_info, name, template=docnum_noproc.template_dbname)
    superuser_dsn = server_info.dsn(name)
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        conn.execute(CREATE_AUTHENTICATOR)
        conn.execute(f"GRANT SELECT ON public.alembic_version TO {AUTHENTICATOR}")
    login_dsn = make_conninfo(superuser_dsn, user=AUTHENTICATOR, password=AUTHENTICATOR_PASSWORD)
    try:
        yield HttpDatabase(name, superuser_dsn, login_dsn)
    finally:
        drop_database(server_info, name)
