"""The fixtures work: a connection, a migrated database per test, extra connections, the helpers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from alembic.script import ScriptDirectory

from docnum.ops import schema
from support.helpers import ServerInfo, create_database, drop_database, wait_until_blocked


def test_select_one(db: psycopg.Connection[Any]) -> None:
    assert db.execute("SELECT 1").fetchone() == (1,)
    assert db.autocommit


def test_database_is_migrated(db: psycopg.Connection[Any]) -> None:
    assert db.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'docnum'").fetchone() == (1,)
    head = ScriptDirectory.from_config(schema.alembic_config("unused")).get_current_head()
    assert db.execute("SELECT version_num FROM public.alembic_version").fetchall() == [(head,)]


def test_each_test_gets_a_fresh_clone_of_the_template(
    db: psycopg.Connection[Any], server_info: ServerInfo
) -> None:
    # What a test writes stays in its own clone: a clone made now from the same template does not see it.
    assert db.info.dbname != server_info.maintenance_dbname
    db.execute("CREATE TABLE public.smoke_marker ()")
    assert db.execute("SELECT to_regclass('public.smoke_marker') IS NOT NULL").fetchone() == (True,)
    row = db.execute(
        "SELECT datname FROM pg_database WHERE datname = %s", (db.info.dbname + "_tmpl",)
    ).fetchone()
    assert row is not None, "the clone's template"
    scratch = f"smoke_{uuid.uuid4().hex[:12]}"
    create_database(server_info, scratch, template=row[0])
    try:
        with server_info.connect(scratch) as other:
            assert other.execute("SELECT to_regclass('public.smoke_marker')").fetchone() == (None,)
            assert other.execute("SELECT to_regnamespace('docnum') IS NOT NULL").fetchone() == (True,)
    finally:
        drop_database(server_info, scratch)


def test_dsn_and_connect_reach_the_same_database(
    db: psycopg.Connection[Any], dsn: str, connect: Callable[..., psycopg.Connection[Any]]
) -> None:
    with psycopg.connect(dsn) as other:
        assert other.info.dbname == db.info.dbname
    extra = connect(autocommit=True)
    assert extra.info.dbname == db.info.dbname
    assert extra.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)


def test_wait_until_blocked(
    db: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]]
) -> None:
    db.execute("CREATE TABLE public.smoke_lock (id int PRIMARY KEY)")
    db.execute("INSERT INTO public.smoke_lock VALUES (1)")
    holder, waiter = connect(), connect()
    holder.execute("SELECT * FROM public.smoke_lock WHERE id = 1 FOR UPDATE")

    done = threading.Event()

    def wait_for_row() -> None:
        waiter.execute("SELECT * FROM public.smoke_lock WHERE id = 1 FOR UPDATE")
        waiter.commit()
        done.set()

    thread = threading.Thread(target=wait_for_row)
    thread.start()
    blockers = wait_until_blocked(db, waiter.info.backend_pid)
    assert blockers == [holder.info.backend_pid]
    assert not done.is_set()

    holder.commit()
    thread.join(timeout=10)
    assert done.is_set()
