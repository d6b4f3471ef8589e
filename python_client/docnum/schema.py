"""Install, upgrade and remove the docnum schema.

`migrate` and `downgrade` run the Alembic revisions under migrations/ (the released, frozen history).
`apply_sql_dir` runs the current sql/*.sql directly; the drift test checks that both give the same schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config

from docnum.embedded import alembic_ini, migrations_dir, sql_dir

__all__ = ["alembic_config", "apply_sql_dir", "downgrade", "migrate", "sql_files"]


def alembic_config(dsn: str) -> Config:
    """An Alembic Config for the repository's migrations, bound to `dsn`.

    The DSN travels in `config.attributes["dsn"]` (read by migrations/env.py), never through the ini parser,
    so `%` in passwords needs no escaping. `configure_logger` False keeps env.py from reconfiguring logging
    inside a host application or pytest.
    """
    config = Config(str(alembic_ini()))
    config.set_main_option("script_location", str(migrations_dir()).replace("%", "%%"))
    config.attributes["dsn"] = dsn
    config.attributes["configure_logger"] = False
    return config


def migrate(dsn: str, revision: str = "head") -> None:
    """Upgrade the database at `dsn` to `revision` (default: the latest)."""
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str = "base") -> None:
    """Downgrade the database at `dsn` to `revision` (default: remove schema docnum entirely)."""
    command.downgrade(alembic_config(dsn), revision)


def sql_files(directory: Path | None = None) -> list[Path]:
    """The engine's SQL files in the order they are applied (lexical by file name)."""
    return sorted((directory or sql_dir()).glob("*.sql"), key=lambda p: p.name)


def apply_sql_dir(conn: psycopg.Connection[Any], directory: Path | None = None) -> list[Path]:
    """Execute every sql/*.sql in lexical order, in one transaction, as the connected (super)user.

    Returns the files applied. Each file is sent as one simple-protocol query, so it may hold any number of
    statements, `$$` bodies and `:`/`%` characters.
    """
    files = sql_files(directory)
    with conn.transaction():
        for path in files:
            conn.execute(path.read_bytes())
    return files
