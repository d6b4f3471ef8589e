"""The Python client behind PgBouncer in transaction pooling mode.

Each test starts a real PgBouncer (Debian package `pgbouncer`) on a free loopback port, in front of the test's
database, with `pool_mode = transaction` and a small server pool, and authenticates a login role in docnum_app
from an auth file. Through it, many threads share a few server connections with a default psycopg pool (no
special settings): every call succeeds, no number is issued twice, the values are exactly 1..N, and the pooled
server connections hold no lock afterwards. A control shows that the pooler really mixes sessions: psycopg's
automatic server-side preparation, which the client turns off for its own statements, fails there.

Without pgbouncer the tests skip locally and fail under CI ($CI set), which installs it (.ci/run).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from docnum import AsyncNumbering, Numbering
from support.helpers import ServerInfo, define, in_ci

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

Conn = psycopg.Connection[Any]

POOL_SIZE = 2  # server connections PgBouncer keeps per database and user
THREADS = 8
CALLS_PER_THREAD = 24  # well above psycopg's prepare_threshold (5): a prepared statement would show up


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(path, os.X_OK)), None
    )
    if found:
        return found
    message = "pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run installs it)"
    if in_ci():
        pytest.fail(message + "; under CI this test must run", pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as(server: ServerInfo) -> str | None:
    """The user PgBouncer switches to when started as root (it refuses to run as root), else None.

    A server reached through a unix socket directory is reachable by the directory's owner (the embedded
    server's own system user); TCP is reachable by anyone, so `nobody` will do.
    """
    if os.geteuid() != 0:
        return None
    if server.host and server.host.startswith("/"):
        owner = Path(server.host).stat().st_uid
        if owner != 0:
            return pwd.getpwuid(owner).pw_name
    return "nobody"


def _quote(value: str) -> str:
    """A double-quoted auth_file field."""
    return '"' + value.replace('"', '""') + '"'


@dataclass
class Bouncer:
    port: int
    dbname: str  # the pooled database, in transaction pooling mode
    single_dbname: str  # the same database with a pool of one server connection
    user: str  # the login role in docnum_app
    password: str
    log: Path

    def dsn(self, dbname: str | None = None, **extra: Any) -> str:
        return make_conninfo(
            host="127.0.0.1",
            port=self.port,
            dbname=dbname or self.dbname,
            user=self.user,
            password=self.password,
            **extra,
        )


@pytest.fixture
def app_login(db: Conn) -> Iterator[tuple[str, str]]:
    """A login role in docnum_app with a password: (name, password). Roles are cluster-wide: dropped after."""
    name = f"docnum_pooler_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE docnum_app").format(
            sql.Identifier(name), sql.Literal(password)
        )
    )
    try:
        yield name, password
    finally:
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        for _ in range(100):  # DROP ROLE fails while a terminated backend is still on its way out
            if db.execute("SELECT 1 FROM pg_stat_activity WHERE usename = %s", (name,)).fetchone() is None:
                break
            time.sleep(0.05)
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def bouncer(server_info: ServerInfo, db: Conn, app_login: tuple[str, str]) -> Iterator[Bouncer]:
    """A PgBouncer in transaction pooling mode in front of this test's database, stopped by its pid after."""
    binary = _pgbouncer_binary()
    user, password = app_login
    run_as = _run_as(server_info)
    workdir = Path(tempfile.mkdtemp(prefix="docnum-pgbouncer-"))
    port = _free_port()
    target = f"host={server_info.host or '127.0.0.1'} port={server_info.port} dbname={db.info.dbname}"
    users = [(user, password)]
    if server_info.password:  # for a look through the pooler (psql); the embedded server's has no password
        users.append((server_info.user, server_info.password))
    (workdir / "userlist.txt").write_text("".join(f"{_quote(u)} {_quote(p)}\n" for u, p in users))
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
docnum = {target}
docnum_single = {target} pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
server_lifetime = 3600
server_idle_timeout = 600
pidfile = {workdir / "pgbouncer.pid"}
"""
    )
    log = workdir / "pgbouncer.log"
    command = [binary, str(workdir / "pgbouncer.ini")]
    if run_as is not None:
        shutil.chown(workdir, user=run_as)
        for path in workdir.iterdir():
            shutil.chown(path, user=run_as)
        command += ["-u", run_as]
    workdir.chmod(0o700)
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"pgbouncer exited with status {process.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"pgbouncer did not listen on 127.0.0.1:{port} within 15s:\n{log.read_text()}"
                    )
                time.sleep(0.05)
        yield Bouncer(port, "docnum", "docnum_single", user, password, log)
    finally:
        process.terminate()  # SIGTERM: immediate shutdown of this one process
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _pooled_backends(db: Conn, user: str) -> list[tuple[int, str]]:
    """(pid, state) of the server connections PgBouncer opened for `user`."""
    rows = db.execute(
        "SELECT pid, state FROM pg_stat_activity WHERE usename = %s AND datname = current_database()", (user,)
    ).fetchall()
    return [(int(pid), str(state)) for pid, state in rows]


def _assert_nothing_held(db: Conn, bouncer: Bouncer) -> None:
    """The pooled server connections are idle (outside any transaction) and hold no lock of any kind."""
    backends = _pooled_backends(db, bouncer.user)
    assert backends, "no server connection was opened through the pooler"
    assert len(backends) <= POOL_SIZE, f"more server connections than pool_size {POOL_SIZE}: {backends}"
    assert all(state == "idle" for _, state in backends), backends
    held = db.execute(
        "SELECT l.pid, l.locktype, l.mode, l.granted FROM pg_locks l WHERE l.pid = ANY (%s)"
        " OR (l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database"
        "                                                WHERE datname = current_database()))",
        ([pid for pid, _ in backends],),
    ).fetchall()
    assert held == [], f"locks left behind on pooled connections: {held}"


def _assert_gapless(db: Conn, code: str, issued: list[str]) -> None:
    rows = db.execute(
        "SELECT document_number, sequence_value, state FROM docnum.ledger WHERE document_type = %s"
        " ORDER BY sequence_value",
        (code,),
    ).fetchall()
    assert len(set(issued)) == len(issued), "a number was handed out twice"
    assert sorted(number for number, _, _ in rows) == sorted(issued)
    assert [value for _, value, _ in rows] == list(range(1, len(issued) + 1))
    assert {state for _, _, state in rows} == {"confirmed"}


def test_many_threads_share_few_server_connections(db: Conn, bouncer: Bouncer) -> None:
    define(db, "PGB", "{TYPE}-{SEQ:5}")
    issued: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    # A plain pool with psycopg's defaults (prepare_threshold=5): the client needs no setting of its own.
    with ConnectionPool(bouncer.dsn(), min_size=THREADS, max_size=THREADS, open=True) as pool:
        pool.wait(timeout=30)
        numbering = Numbering(pool)

        def work(worker: int) -> None:
            try:
                for call in range(CALLS_PER_THREAD):
                    if call % 2:
                        number = numbering.next_number("PGB", actor=f"worker {worker}")
                    else:
                        reservation = numbering.reserve("PGB", actor=f"worker {worker}")
                        number = numbering.confirm(reservation.token, document_ref=f"w{worker}/{call}")
                        assert number == reservation.document_number
                    with lock:
                        issued.append(number)
            except BaseException as error:  # reported below, with every other thread's
                with lock:
                    errors.append(error)

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads), "a worker is still running after 120s"
    assert errors == []
    assert len(issued) == THREADS * CALLS_PER_THREAD
    _assert_gapless(db, "PGB", issued)
    _assert_nothing_held(db, bouncer)


def test_the_async_client_through_the_pooler(db: Conn, bouncer: Bouncer) -> None:
    define(db, "PGA", "{TYPE}-{SEQ:5}")

    async def scenario() -> list[str]:
        async with AsyncConnectionPool(bouncer.dsn(), min_size=4, max_size=4, open=False) as pool:
            numbering = AsyncNumbering(pool)

            async def one(worker: int) -> list[str]:
                numbers = []
                for call in range(12):
                    if call % 2:
                        numbers.append(await numbering.next_number("PGA"))
                    else:
                        reservation = await numbering.reserve("PGA")
                        numbers.append(await numbering.confirm(reservation.token))
                return numbers

            results = await asyncio.gather(*(one(worker) for worker in range(4)))
            return [number for numbers in results for number in numbers]

    issued = asyncio.run(scenario())
    assert len(issued) == 48
    _assert_gapless(db, "PGA", issued)
    _assert_nothing_held(db, bouncer)


def test_control_automatic_preparation_breaks_behind_the_pooler(bouncer: Bouncer) -> None:
    """Why the client never prepares: two sessions on one server connection both name a statement _pg3_0."""
    with (
        psycopg.connect(bouncer.dsn(bouncer.single_dbname), autocommit=True) as first,
        psycopg.connect(bouncer.dsn(bouncer.single_dbname), autocommit=True) as second,
    ):
        for _ in range(8):  # prepared as _pg3_0 on the pool's one server connection after 5 runs
            first.execute("SELECT 1")
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement, match="_pg3_0"):
            for _ in range(8):
                second.execute("SELECT 2")
        # The documented setting for statements of your own: never prepare.
    with psycopg.connect(
        bouncer.dsn(bouncer.single_dbname), autocommit=True, prepare_threshold=None
    ) as third:
        for _ in range(8):
            assert third.execute("SELECT 3").fetchone() == (3,)
