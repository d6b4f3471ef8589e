"""Alembic environment for docnum.

The schema is plain SQL (no SQLAlchemy models), so there is no autogenerate: every revision executes SQL.
All pending revisions run in ONE transaction (PostgreSQL has transactional DDL): an upgrade either fully
happens or not at all. Alembic's own `alembic_version` table lives in `public`, outside schema docnum.
"""

from __future__ import annotations

import logging.config
import os

import psycopg.conninfo
from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection, Engine

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

VERSION_TABLE_SCHEMA = "public"


def _dsn() -> str:
    """The target database: Config attribute, else $DOCNUM_DSN, else the embedded server."""
    dsn = config.attributes.get("dsn") or os.environ.get("DOCNUM_DSN")
    if dsn:
        return str(dsn)
    from docnum.embedded import resolve_dsn

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
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        # A caller handed us its own SQLAlchemy connection (and owns its transaction).
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    engine = _engine(_dsn())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
