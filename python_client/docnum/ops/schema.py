"""Install, upgrade and remove the docnum schema.

The engine lives at the top of the repository: `sql/` (the current schema, one concern per file) and
`migrations/` (Alembic's environment and the frozen revisions). The wheel carries both inside the package
(`docnum/sql/`, `docnum/migrations/`), where importlib.resources finds them, so an installed wheel can migrate
a database with no checkout around it; an editable install reads them from the checkout. `migrate` and
`downgrade` run the revisions (the released, frozen history) with an Alembic configuration built here;
`apply_sql_dir` runs the current sql/*.sql directly, and the drift test checks that both give the same
schema. The repository's alembic.ini points at the same files for people who run `alembic` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import psycopg

if TYPE_CHECKING:  # Alembic is imported by the functions that use it: finding the files stays light
    from alembic.config import Config

__all__ = [
    "SchemaState",
    "alembic_config",
    "apply_sql_dir",
    "downgrade",
    "head_revision",
    "migrate",
    "migrations_dir",
    "read_state",
    "read_state_async",
    "sql_dir",
    "sql_files",
    "sql_script",
]


def _engine_dir(name: str) -> Path:
    """`name` (sql or migrations) inside the installed package, else at the top of the checkout.

    A wheel carries the engine as package data (pyproject.toml's force-include). An editable install runs the
    package from python_client/docnum/ (this file is in its ops/), below the top where the only copy lives.
    """
    for candidate in (
        Path(str(resources.files("docnum") / name)),
        Path(__file__).resolve().parents[3] / name,
    ):
        # Holding the engine, not only what an older layout left behind (a __pycache__)
        if candidate.is_dir() and any(p.suffix in (".sql", ".py") for p in candidate.iterdir()):
            return candidate
    raise FileNotFoundError(f"docnum's {name}/ is neither in the installed package nor in a checkout")


def sql_dir() -> Path:
    """The engine's current SQL source, one concern per file, applied in lexical order."""
    return _engine_dir("sql")


def migrations_dir() -> Path:
    """The Alembic script directory: env.py and the frozen revisions under versions/."""
    return _engine_dir("migrations")


def alembic_config(dsn: str, output: TextIO | None = None) -> Config:
    """An Alembic Config for the repository's migrations, bound to `dsn`.

    The DSN travels in `config.attributes["dsn"]` (read by migrations/env.py), never through the ini parser,
    so `%` in passwords needs no escaping. `configure_logger` False keeps env.py from reconfiguring logging
    inside a host application or pytest.
    """
    from alembic.config import Config

    config = Config(output_buffer=output)
    # The ini parser interpolates %: a path holding one must double it.
    config.set_main_option("script_location", str(migrations_dir()).replace("%", "%%"))
    config.attributes["dsn"] = dsn
    config.attributes["configure_logger"] = False
    return config


def migrate(dsn: str, revision: str = "head") -> None:
    """Upgrade the database at `dsn` to `revision` (default: the latest)."""
    from alembic import command

    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str = "base") -> None:
    """Downgrade the database at `dsn` to `revision` (default: remove schema docnum entirely)."""
    from alembic import command

    command.downgrade(alembic_config(dsn), revision)


def sql_script(from_revision: str | None = None) -> str:
    """The SQL that installs docnum on an empty database, or upgrades it from `from_revision`, to head.

    Alembic's offline mode writes it (`alembic upgrade --sql`): the same revisions `migrate` runs, framed by
    migrations/session.sql, begin.sql and end.sql, with Alembic's version stamps, so that a later `migrate`
    has nothing to do. It holds no BEGIN/COMMIT: run it with `psql -1 -v ON_ERROR_STOP=1 -f FILE`.
    """
    import io

    from alembic import command

    buffer = io.StringIO()
    config = alembic_config("", output=buffer)
    command.upgrade(config, f"{from_revision}:head" if from_revision else "head", sql=True)
    return buffer.getvalue()


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


# -- where a database stands ------------------------------------------------------------------------------
# The one answer to "is this database's schema at head?", for `docnum doctor`, the embedded server's setup
# and the HTTP service's readiness.


def head_revision() -> str:
    """The newest revision this package ships: the four digits that start its newest revision's file name.
    The chain of revisions is linear (a test holds it to Alembic's single head), so this needs no Alembic,
    which every command would otherwise pay for."""
    versions = migrations_dir() / "versions"
    return max(
        entry.name[:4]
        for entry in versions.iterdir()
        if entry.name[:4].isdigit() and entry.name.endswith(".py")
    )


#: What the catalog says: schema docnum installed, an Alembic history, and whether this role may read it.
_STATE = (
    "SELECT to_regnamespace('docnum') IS NOT NULL, to_regclass('public.alembic_version') IS NOT NULL,"
    " to_regclass('public.alembic_version') IS NOT NULL"
    " AND pg_catalog.has_table_privilege('public.alembic_version', 'SELECT')"
)
_VERSIONS = "SELECT version_num FROM public.alembic_version"


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against the revisions this package ships."""

    installed: bool  #: schema docnum exists
    versioned: bool  #: public.alembic_version exists (not so when sql/ was applied directly)
    readable: bool  #: the connected role may read it
    current: frozenset[str]  #: the revisions it records
    head: str  #: the newest revision this package ships

    @property
    def at_head(self) -> bool:
        return self.installed and self.current == {self.head}

    def describe(self, user: str = "this role") -> str:
        """One line for people: what is wrong, or that it is at head."""
        if not self.installed:
            return "schema docnum is not installed"
        if not self.versioned:
            return "schema docnum has no Alembic history (installed from sql/ directly?)"
        if not self.readable:
            return f"{user} may not read public.alembic_version: GRANT SELECT ON public.alembic_version TO it"
        if self.at_head:
            return f"at head ({self.head})"
        return f"at {', '.join(sorted(self.current)) or 'nothing'}, head is {self.head}"


def _state(row: tuple[Any, ...] | None, versions: list[tuple[Any, ...]]) -> SchemaState:
    installed, versioned, readable = row if row is not None else (False, False, False)
    return SchemaState(
        bool(installed),
        bool(versioned),
        bool(readable),
        frozenset(str(v[0]) for v in versions),
        head_revision(),
    )


def read_state(conn: psycopg.Connection[Any]) -> SchemaState:
    """Where the database of `conn` stands (two catalog reads, no Alembic)."""
    row = conn.execute(_STATE, prepare=False).fetchone()
    versions = conn.execute(_VERSIONS, prepare=False).fetchall() if row is not None and row[2] else []
    return _state(row, versions)


async def read_state_async(conn: psycopg.AsyncConnection[Any]) -> SchemaState:
    """:func:`read_state` on an asyncio connection."""
    row = await (await conn.execute(_STATE, prepare=False)).fetchone()
    versions = (
        await (await conn.execute(_VERSIONS, prepare=False)).fetchall() if row is not None and row[2] else []
    )
    return _state(row, versions)
