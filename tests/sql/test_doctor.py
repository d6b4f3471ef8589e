"""docnum.doctor(): the DBA's checks as rows, run with the caller's rights (docnum_reader)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from support.helpers import define, next_number

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]

CHECKS = [
    "revision",
    "roles",
    "public privileges",
    "security definer",
    "validate",
    "prepared transactions",
    "idle transactions",
    "fsync",
    "synchronous_commit",
    "standby",
]


def as_role(connect: Connect, role: str) -> Conn:
    conn = connect(autocommit=True)
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return conn


def doctor(conn: Conn, run_validate: bool = True) -> dict[str, tuple[str, str]]:
    rows = conn.execute("SELECT * FROM docnum.doctor(run_validate => %s)", (run_validate,)).fetchall()
    return {name: (status, detail) for name, status, detail in rows}


def test_a_reader_gets_every_check_and_a_healthy_database_passes_them(db: Conn, connect: Connect) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    next_number(db, "COR")
    found = doctor(as_role(connect, "docnum_reader"))
    assert list(found) == CHECKS
    unhealthy = {name: v for name, v in found.items() if v[0] != "ok" and name not in ("fsync", "revision")}
    assert unhealthy == {}
    assert "validate" not in doctor(as_role(connect, "docnum_reader"), run_validate=False)


def test_it_finds_an_idle_holder_public_grants_and_gaps(db: Conn, connect: Connect) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    next_number(db, "COR")
    db.execute("UPDATE docnum.counter SET current_value = 4 WHERE document_type = 'COR'")  # 2..4 never issued
    db.execute("GRANT EXECUTE ON FUNCTION docnum.status(text) TO PUBLIC")
    holder = connect()
    holder.execute("SELECT docnum.next_number(document_type => 'COR')")  # and then idle in its transaction
    found = doctor(db)  # a superuser sees every session
    assert (
        found["idle transactions"][0] == "fail"
        and f"pid {holder.info.backend_pid}" in found["idle transactions"][1]
    )
    assert found["public privileges"] == ("fail", "PUBLIC has privileges on function docnum.status(text)")
    assert found["validate"][0] == "fail" and "unexplained_gap" in found["validate"][1]
    holder.rollback()
    assert doctor(db)["idle transactions"][0] == "ok"


def test_a_reader_who_cannot_see_other_sessions_is_told_so(db: Conn, connect: Connect) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    holder = connect()
    holder.execute("SELECT docnum.next_number(document_type => 'COR')")  # as the superuser, idle in it
    reader = as_role(connect, "docnum_reader")
    status, detail = doctor(reader, run_validate=False)["idle transactions"]
    assert status == "warn" and "GRANT pg_read_all_stats" in detail
    holder.rollback()


def test_a_role_without_docnum_grants_may_not_run_it(db: Conn, connect: Connect) -> None:
    db.execute("DROP ROLE IF EXISTS doctor_stranger")
    db.execute("CREATE ROLE doctor_stranger")
    try:
        stranger = as_role(connect, "doctor_stranger")
        with pytest.raises(errors.InsufficientPrivilege):
            stranger.execute("SELECT * FROM docnum.doctor()")
    finally:
        db.execute("DROP ROLE doctor_stranger")
