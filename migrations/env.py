"""Alembic environment for docnum.

The schema is plain SQL (no SQLAlchemy models), so there is no autogenerate: every revision executes SQL.
All pending revisions run in ONE transaction (PostgreSQL has transactional DDL): an upgrade either fully
happens or not at all. Alembic's own `alembic_version` table lives in `public`, outside schema docnum.

Around the revisions the transaction runs three files of this directory: session.sql (helpers in pg_temp),
begin.sql (one transaction or stop; the installer prepared, or NB013 before anything changed) and end.sql.
Offline (`alembic upgrade --sql`, `docnum sql`) they are printed around the revisions, with no BEGIN/COMMIT
of Alembic's: the script runs with `psql -1 -v ON_ERROR_STOP=1 -f`, and begin.sql stops it outside a
transaction.
"""

from __future__ import annotations

import logging.config
import os
from pathlib import Path

import psycopg.conninfo
from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection, Engine

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

VERSION_TABLE_SCHEMA = "public"
HERE = Path(__file__).parent


def _sql(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


def _around(connection: Connection | None, name: str) -> None:
    """Run (online) or print (offline) one of the files that frame the revisions."""
    text = _sql(name)
    if connection is None:
        context.get_context().impl.static_output(text)
        return
    # Straight to psycopg, as the revisions do: SQLAlchemy would take `:name` for a bind parameter.
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute(text.encode("utf-8"))


def _nothing_to_do(connection: Connection) -> bool:
    """True for an upgrade to head of a database already there (`docnum migrate` run twice): then no
    requirement of the installer's is checked, so any role may run it."""
    if context.get_revision_argument() not in ("head", "heads"):
        return False
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(config).get_heads())
    return set(context.get_context().get_current_heads()) == heads


def _run(connection: Connection | None) -> None:
    """The revisions, framed by session.sql + begin.sql and end.sql, in the caller's transaction."""
    if connection is not None and _nothing_to_do(connection):
        context.run_migrations()
        return
    _around(connection, "session.sql")
    _around(connection, "begin.sql")
    context.run_migrations()
    _around(connection, "end.sql")


def _dsn() -> str:
    """The target database: Config attribute, else $DOCNUM_DSN, else the embedded server."""
    dsn = config.attributes.get("dsn") or os.environ.get("DOCNUM_DSN")
    if dsn:
        return str(dsn)
    from docnum.ops.embedded import resolve_dsn

    return resolve_dsn()


def _engine(dsn: str) -> Engine:
    """A SQLAlchemy engine on psycopg 3 for a libpq URI or a key=value conninfo string."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            url = "postgresql+psycopg://" + dsn[len(prefix) :]
            return create_engine(url, poolclass=pool.NullPool)
    if dsn.startswith("postgresql+psycopg://"):
        return create_engine(dsn, poolclass=pool.NullPool)
    # key=value conninfo: let libpq parse it, SQLAlchemy only wraps the connection.
    conninfo = psycopg.conninfo.make_conninfo(dsn)
    return create_engine(
        "postgresql+psycopg://",
        poolclass=pool.NullPool,
        creator=lambda: psycopg.connect(conninfo),
    )


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table_schema=VERSION_TABLE_SCHEMA,
        transaction_per_migration=False,
    )


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    context.configure(
        url="postgresql+psycopg://",
        dialect_name="postgresql",
        literal_binds=True,
        version_table_schema=VERSION_TABLE_SCHEMA,
        transaction_per_migration=False,
        # psql -1 makes the transaction; begin.sql refuses to run without one
        transactional_ddl=False,
    )
    with context.begin_transaction():
        _run(None)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        # A caller handed us its own SQLAlchemy connection (and owns its transaction).
        _configure(connection)
        with context.begin_transaction():
            _run(connection)
        return

    engine = _engine(_dsn())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
