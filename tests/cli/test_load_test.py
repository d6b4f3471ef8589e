"""`docnum load-test`, through a real subprocess against this test's database: small loads (60 requests from
8 threads), the figures of --json, the text report, --mode next, the connection cap, and checks that fail on a
database where a duplicate or an unexplained gap was planted (as the superuser, as nothing else can)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from docnum import Numbering
from docnum.ops import load_test
from support.helpers import ServerInfo

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

REQUESTS = 60
CONCURRENCY = 8


def docnum(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docnum", "--dsn", dsn, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def load(dsn: str, *args: str, json_output: bool = True) -> subprocess.CompletedProcess[str]:
    return docnum(
        dsn,
        "load-test",
        "--type",
        "COR",
        "--requests",
        str(REQUESTS),
        "--concurrency",
        str(CONCURRENCY),
        *args,
        *(["--json"] if json_output else []),
    )


@pytest.fixture
def numbering(db: psycopg.Connection[Any]) -> Numbering:
    """COR (one global counter) and RFA (per project)."""
    client = Numbering(db)
    client.define_type("COR", "{TYPE}-{SEQ:4}")
    client.define_type("RFA", "{SCOPE}/{TYPE}/{SEQ:4}", scope="PROJECT")
    return client


def ledger(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT sequence_value, document_number, state, actor, token IS NOT NULL FROM docnum.ledger"
        " WHERE counter_id IS NOT NULL ORDER BY sequence_value"
    ).fetchall()


def test_json_figures_are_consistent_and_match_the_ledger(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering
) -> None:
    result = load(dsn)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    assert report["passed"] is True and report["verification"]["passed"] is True
    assert (report["requests"], report["succeeded"], report["failed"]) == (REQUESTS, REQUESTS, 0)
    assert report["numbers_issued"] == REQUESTS and report["errors"] == []
    assert report["concurrency"] == {**report["concurrency"], "requested": 8, "used": 8, "capped": False}
    assert report["mode"] == "reserve" and report["success_rate_pct"] == 100.0
    assert sum(bucket["count"] for bucket in report["histogram"]) == REQUESTS
    latency = report["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    throughput = report["throughput"]
    assert throughput["requests_per_second"] == pytest.approx(REQUESTS / report["elapsed_seconds"])
    assert throughput["numbers_per_second"] == throughput["requests_per_second"]

    assert report["verification"]["ledger_states"] == {"confirmed": REQUESTS}
    (counter,) = report["verification"]["counters"]
    assert (counter["first_value"], counter["last_value"], counter["numbers"]) == (1, REQUESTS, REQUESTS)
    assert (counter["foreign_values"], counter["missing_values"], counter["unexplained_gaps"]) == (0, 0, [])
    assert (counter["first_number"], counter["last_number"]) == ("COR-0001", f"COR-{REQUESTS:04}")
    assert [check["check"] for check in report["verification"]["checks"]] == [
        "unique",
        "states",
        "consecutive",
        "gaps",
    ]

    rows = ledger(db)
    assert [row[0] for row in rows] == list(range(1, REQUESTS + 1))
    assert {row[2:] for row in rows} == {("confirmed", load_test.ACTOR, True)}  # reserved, then confirmed


def test_text_report_shows_percentiles_histogram_and_checks(dsn: str, numbering: Numbering) -> None:
    result = load(dsn, json_output=False)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert f"{REQUESTS} requests, concurrency {CONCURRENCY}" in text
    assert f"{REQUESTS} succeeded (100.0 %), 0 failed" in text and "requests/s" in text
    for label in ("p50 ", "p95 ", "p99 ", "max "):
        assert label in text
    assert "errors: none" in text
    histogram = text.split("latency histogram (ms):\n")[1].split("verification")[0].splitlines()
    assert histogram and all("│" in line and line.rstrip().endswith("%") for line in histogram)
    assert sum(int(line.split()[-3]) for line in histogram) == REQUESTS
    assert "█" in "".join(histogram)
    assert "PASS consecutive COR: values 1..60 (COR-0001 .. COR-0060), one contiguous run of 60" in text
    assert "result: PASS" in text
    assert "\x1b" not in result.stderr and "load-test COR" not in result.stderr  # no progress bar off a tty


def test_mode_next_issues_confirmed_numbers_in_one_step(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering
) -> None:
    result = docnum(
        dsn, "load-test", "--type", "RFA", "--scope", "P1", "--requests", "40", "--concurrency", "6",
        "--mode", "next", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["mode"], report["scope"], report["succeeded"], report["passed"]) == (
        "next",
        "P1",
        40,
        True,
    )
    (counter,) = report["verification"]["counters"]
    assert (counter["scope_value"], counter["first_number"], counter["last_number"]) == (
        "P1",
        "P1/RFA/0001",
        "P1/RFA/0040",
    )
    rows = ledger(db)
    assert len(rows) == 40 and {row[2:] for row in rows} == {("confirmed", load_test.ACTOR, False)}


def test_unknown_type_and_wrong_scope_are_errors_before_any_number(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering
) -> None:
    unknown = docnum(dsn, "load-test", "--type", "NOPE", "--requests", "5")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.startswith("error NB001: document type 'NOPE' is not defined")
    no_scope = docnum(dsn, "load-test", "--type", "RFA", "--requests", "5")
    assert no_scope.returncode == 1 and no_scope.stdout == ""
    assert no_scope.stderr.startswith("error NB006: document type RFA needs a scope value")
    assert "option: --scope" in no_scope.stderr
    assert ledger(db) == []


def test_a_planted_duplicate_fails_the_run(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering
) -> None:
    # Only a superuser can do this: drop the unique key on the text and record COR-0005 a first time, as a
    # restore that bypassed constraints could. The load test then issues COR-0005 a second time.
    db.execute("ALTER TABLE docnum.ledger DROP CONSTRAINT ledger_document_number_key")
    db.execute(
        "INSERT INTO docnum.ledger (document_type, document_number, state)"
        " VALUES ('COR', 'COR-0005', 'overridden')"
    )
    result = load(dsn, json_output=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL unique" in result.stdout
    assert "DUPLICATE in the ledger: COR-0005 (2 rows: overridden, confirmed)" in result.stdout
    assert "60 confirmed, 1 overridden (1 row(s) more than numbers: the duplicates above)" in result.stdout
    assert "result: FAIL" in result.stdout
    assert db.execute("SELECT count(*) FROM docnum.ledger WHERE document_number = 'COR-0005'").fetchone() == (
        2,
    )


def test_an_unexplained_gap_fails_the_run(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering
) -> None:
    numbering.next_number("COR")
    db.execute("UPDATE docnum.counter SET current_value = current_value + 3 WHERE document_type = 'COR'")
    result = load(dsn)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is False and report["succeeded"] == REQUESTS
    checks = {check["check"]: check for check in report["verification"]["checks"]}
    assert checks["unique"]["passed"] and checks["states"]["passed"] and checks["consecutive"]["passed"]
    assert not checks["gaps"]["passed"] and "COR 2..4" in checks["gaps"]["detail"]
    (counter,) = report["verification"]["counters"]
    assert (counter["first_value"], counter["last_value"]) == (5, REQUESTS + 4)
    assert counter["unexplained_gaps"] == [{"first_value": 2, "last_value": 4, "value_count": 3}]


def test_values_other_sessions_took_meanwhile_are_counted_not_failed(
    db: psycopg.Connection[Any], numbering: Numbering
) -> None:
    issued = [numbering.next_number("COR", actor="someone") for _ in range(9)]
    mine = issued[::2]  # COR-0001, -0003, ..., -0009: the others are another session's, interleaved
    counters, states, checks = load_test.verify(db, mine, ["confirmed"] * len(mine))
    (counter,) = counters
    assert (counter.numbers, counter.foreign_values, counter.missing_values) == (5, 4, 0)
    assert states == {"confirmed": 5} and all(check.passed for check in checks)
    assert "4 value(s) other sessions took meanwhile, all in the ledger" in checks[2].detail


@pytest.fixture
def limited_login(server_info: ServerInfo, db: psycopg.Connection[Any]) -> Iterator[str]:
    """The DSN of a login role in docnum_app and docnum_reader allowed 4 connections; dropped after."""
    name = f"docnum_load_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    db.execute(
        sql.SQL(
            "CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT 4 IN ROLE docnum_app, docnum_reader"
        ).format(sql.Identifier(name), sql.Literal(password))
    )
    try:
        yield make_conninfo(server_info.dsn(db.info.dbname), user=name, password=password)
    finally:
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        for _ in range(100):  # DROP ROLE fails while a backend of the role is still on its way out
            if db.execute("SELECT 1 FROM pg_stat_activity WHERE usename = %s", (name,)).fetchone() is None:
                break
            time.sleep(0.05)
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_concurrency_is_capped_to_the_connections_the_server_allows(
    limited_login: str, numbering: Numbering
) -> None:
    result = load(limited_login, json_output=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "concurrency 4 (pool of 4 connections)" in result.stdout
    assert "note: concurrency capped from 8 to 4, what the server accepts now" in result.stdout
    assert "role limit 4 (1 in use)" in result.stdout and "result: PASS" in result.stdout


def test_a_role_that_cannot_verify_issues_nothing(
    server_info: ServerInfo, db: psycopg.Connection[Any], limited_login: str, numbering: Numbering
) -> None:
    user = db.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'docnum_load_%'").fetchone()
    assert user is not None
    db.execute(sql.SQL("REVOKE docnum_reader FROM {}").format(sql.Identifier(user[0])))
    result = load(limited_login)
    assert result.returncode == 1 and result.stdout == ""
    assert "error privilege:" in result.stderr and "docnum_reader" in result.stderr
    assert ledger(db) == []


def test_failed_requests_are_counted_by_code_and_do_not_fail_the_run(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering
) -> None:
    numbering.define_type("LIM", "{TYPE}-{SEQ:3}", max_value=50)  # the last 10 requests find it exhausted
    result = docnum(dsn, "load-test", "--type", "LIM", "--requests", "60", "--concurrency", "8", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["succeeded"], report["failed"], report["numbers_issued"]) == (50, 10, 50)
    assert report["success_rate_pct"] == pytest.approx(100 * 50 / 60)
    (error,) = report["errors"]
    assert (error["code"], error["count"]) == ("NB002", 10)
    assert error["message"].startswith("sequence exhausted for LIM")
    assert report["passed"] is True and sum(bucket["count"] for bucket in report["histogram"]) == 50
    (counter,) = report["verification"]["counters"]
    assert (counter["first_value"], counter["last_value"], counter["missing_values"]) == (1, 50, 0)


def test_a_run_in_which_every_request_failed_fails(
    db: psycopg.Connection[Any],
    dsn: str,
    numbering: Numbering,
    connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    numbering.define_type("SLOW", "{TYPE}-{SEQ:3}", lock_timeout="100 milliseconds")
    numbering.next_number("SLOW")  # the counter exists
    holder = connect()  # holds the counter in an open transaction: every request times out (NB003)
    holder.execute("SELECT docnum.next_number('SLOW')")
    try:
        result = docnum(dsn, "load-test", "--type", "SLOW", "--requests", "16", "--concurrency", "8")
    finally:
        holder.rollback()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 succeeded (0.0 %), 16 failed" in result.stdout
    (nb003,) = [line for line in result.stdout.splitlines() if line.strip().startswith("NB003")]
    assert nb003.split()[1] == "16"
    assert "(no successful request)" in result.stdout
    assert "FAIL: every request failed" in result.stdout and "result: FAIL" in result.stdout
