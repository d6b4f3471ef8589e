"""Shared fixtures: one PostgreSQL server per session, one migrated template, a fresh clone per test.

The server is `$DOCNUM_DSN` (a superuser URI or conninfo) when set, else a throwaway embedded PostgreSQL 18
in a temporary directory. pytest-postgresql's janitors do the database work: `docnum_noproc` creates the
template `docnum_tests_tmpl` once and runs `alembic upgrade head` in it; `docnum_pg` clones it for each test
and drops the clone afterwards.

Fixtures for tests:
    server_info  ServerInfo              superuser access to the server (dsn(dbname), connect(dbname), ...)
    db           psycopg.Connection      autocommit superuser connection to this test's database
    dsn          str                     conninfo of this test's database, for extra connections
    connect      (**kwargs) -> Connection  opens extra connections to this test's database, closed at teardown
    pg_bindir    Path                    PostgreSQL 18 client programs (pg_dump, psql, pgbench)

Hypothesis profiles (HYPOTHESIS_PROFILE picks one; otherwise "ci" when $CI is set, as .ci/run sets it, else
"dev"):
    dev  random examples, full shrinking: a failure comes back as small as Hypothesis can make it
    ci   the same examples on every run (derandomize) and no shrinking, so a failure costs seconds, not the
         minutes a shrink of a database-backed stateful test can take; the failing steps are printed with a
         @reproduce_failure blob to replay it
    ci-shrink  the ci examples with shrinking: run locally to get a minimal version of a failure CI reported
    (tests/sql/test_model_stateful.py's state machine never shrinks: see there why)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import Phase, settings
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories

from docnum.ops import embedded, schema
from support.helpers import ServerInfo, in_ci

TEST_DBNAME = "docnum_tests"  # per-test clone; the template is TEST_DBNAME + "_tmpl"

# Every example talks to a real server, so no deadline. Tests that set max_examples keep their own count and
# take everything else from the loaded profile.
settings.register_profile("dev", deadline=None, print_blob=True)
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    max_examples=50,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.explain],
)
# CI's examples, shrunk: HYPOTHESIS_PROFILE=ci-shrink finds the failure CI reported and makes it minimal.
settings.register_profile("ci-shrink", settings.get_profile("ci"), phases=list(Phase))


def _hypothesis_profile() -> str:
    chosen = os.environ.get("HYPOTHESIS_PROFILE")
    if chosen:
        return chosen
    return "ci" if in_ci() else "dev"


settings.load_profile(_hypothesis_profile())


def _describe(dsn: str) -> ServerInfo:
    """Connect once with `dsn` to learn the effective host, port, user and password (libpq fills defaults)."""
    given = conninfo_to_dict(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if not (row and row[0]):
            raise pytest.UsageError(f"the test DSN must connect as a superuser; {conn.info.user} is not one")
        info = conn.info
        password = given.get("password") or info.password
        return ServerInfo(
            host=info.host or None,
            port=int(info.port),
            user=info.user,
            password=str(password) if password else None,
            maintenance_dbname=info.dbname,
            server_version=info.server_version,
        )


def _drop_leftovers(server: ServerInfo) -> None:
    """Remove the test databases an interrupted earlier session left on a shared server."""
    with server.connect(autocommit=True) as conn:
        for name in (TEST_DBNAME, TEST_DBNAME + "_tmpl"):
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                continue
            ident = sql.Identifier(name)
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false ALLOW_CONNECTIONS false").format(ident)
            )
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(sql.SQL("DROP DATABASE {}").format(ident))


@pytest.fixture(scope="session")
def server_info() -> Iterator[ServerInfo]:
    dsn = os.environ.get(embedded.DSN_ENV)
    if dsn:
        server = _describe(dsn)
        _drop_leftovers(server)
        yield server
        return

    tmp = Path(tempfile.mkdtemp(prefix="docnum-test-"))
    # Test workers (pytest-xdist) start their servers at the same moment; as root the first start creates the
    # system user `pgserver`, which two `useradd`s at once would race for.
    with open(Path(tempfile.gettempdir()) / f"docnum-test-embedded-{os.getuid()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pg = embedded.start_embedded(tmp / "pgdata", cleanup_mode="delete")
    try:
        # A throwaway server: skip the disk flushes (the engine still forces synchronous_commit on, which the
        # tests check, but a flush costs nothing here) so that cloning and committing stay fast.
        with psycopg.connect(pg.get_uri(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET full_page_writes = off")
            conn.execute("SELECT pg_reload_conf()")
        yield _describe(pg.get_uri())
    finally:
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def _migrate_template(
    *, host: str | None, port: int, user: str, dbname: str, password: str | None, **_: Any
) -> None:
    """pytest-postgresql loader: bring the template database to `alembic upgrade head`.

    With DOCNUM_TEST_SCHEMA=sql the template runs sql/*.sql instead (while a change to sql/ has no revision
    yet); the drift test in test_migrations.py keeps the two equal.
    """
    conninfo = make_conninfo(host=host, port=port, user=user, password=password, dbname=dbname)
    if os.environ.get("DOCNUM_TEST_SCHEMA") == "sql":
        with psycopg.connect(conninfo, autocommit=True) as conn:
            schema.apply_sql_dir(conn)
        return
    schema.migrate(conninfo)


docnum_noproc = factories.postgresql_noproc(
    dbname=TEST_DBNAME, load=[_migrate_template], depends_on="server_info"
)
docnum_pg = factories.postgresql("docnum_noproc")


@pytest.fixture
def db(docnum_pg: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Autocommit superuser connection to this test's freshly cloned, migrated database."""
    docnum_pg.autocommit = True
    return docnum_pg


@pytest.fixture
def dsn(server_info: ServerInfo, db: psycopg.Connection[Any]) -> str:
    """Conninfo (superuser) of this test's database."""
    return server_info.dsn(db.info.dbname)


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """Factory for extra connections to this test's database: `connect(autocommit=True, ...)`.

    Keyword arguments go to psycopg.connect(); every connection is closed at teardown.
    """
    opened: list[psycopg.Connection[Any]] = []

    def _connect(**kwargs: Any) -> psycopg.Connection[Any]:
        conn = psycopg.connect(dsn, **kwargs)
        opened.append(conn)
        return conn

    yield _connect
    for conn in reversed(opened):
        conn.close()


@pytest.fixture(scope="session")
def pg_bindir() -> Path:
    """PostgreSQL 18 client programs (they also work against older servers)."""
    return embedded.pg_bindir()


@pytest.fixture(scope="module")
def http_database(
    server_info: ServerInfo, docnum_noproc: Any, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A migrated database of its own for an HTTP test module, with the login role of `docnum serve`'s pool
    (see tests/support/http_server.py)."""
    from support.http_server import module_database

    yield from module_database(server_info, docnum_noproc, request)
