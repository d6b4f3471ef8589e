"""`docnum metrics`: a real exporter process, scraped over HTTP and parsed with prometheus-client's parser."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from docnum.ops import embedded
from support.exporter import Exporter, families, samples
from support.helpers import define, expect_error, in_thread, next_number, reserve, wait_until_blocked

Conn = psycopg.Connection[Any]
Connect = Callable[..., Conn]

#: Every family of docs/operations.md's table, with its Prometheus type.
FAMILIES = {
    "numbering_sequences": "counter",
    "numbering_allocations": "counter",
    "numbering_counters": "gauge",
    "numbering_sequence_current": "gauge",
    "numbering_sequence_utilization": "gauge",
    "numbering_lock_wait_seconds": "histogram",
    "numbering_lock_failures": "counter",
    "numbering_errors": "counter",
    "numbering_manual_overrides": "counter",
    "numbering_voids": "counter",
    "numbering_reservations": "gauge",
    "numbering_overdue_reservations": "gauge",
    "numbering_oldest_pending_reservation_seconds": "gauge",
    "numbering_unexplained_gaps": "gauge",
    "numbering_integrity_findings": "gauge",
    "numbering_validation_timestamp_seconds": "gauge",
    "numbering_validation_duration_seconds": "gauge",
    "numbering_database_up": "gauge",
}


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_the_families_are_documented_once_in_the_operations_manual() -> None:
    root = Path(__file__).resolve().parents[2]
    table = [
        line
        for line in (root / "docs" / "operations.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `numbering_")
    ]
    documented = {name for line in table for name in re.findall(r"`(numbering_[a-z_]+)`", line.split("|")[1])}
    for family, kind in FAMILIES.items():
        shown = family + "_total" if kind == "counter" else family
        assert shown in documented, family
    # one home: the monitoring files' own README links to the table instead of keeping a copy
    assert "| `numbering_" not in (root / "observability" / "README.md").read_text(encoding="utf-8")


def test_a_scrape_has_every_family_and_moves_with_allocations_and_failures(
    db: Conn, dsn: str, connect: Connect
) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}", lock_timeout="200 milliseconds")
    define(db, "TINY", "{TYPE}-{SEQ}", max_value=1)
    with Exporter(dsn, "--validate-interval", "1h") as exporter:
        exporter.validated()
        text = exporter.scrape_text()
        assert families(text) == FAMILIES
        before = samples(text)
        assert value(before, "numbering_database_up") == 1

        next_number(db, "COR")
        token = reserve(db, "COR")["token"]
        next_number(db, "TINY")
        expect_error("NB002", lambda: next_number(db, "TINY"))  # rolled back, still counted
        holder, waiter = connect(), connect()
        next_number(holder, "COR")
        failing = in_thread(lambda: next_number(waiter, "COR"))
        wait_until_blocked(db, waiter.info.backend_pid)
        with pytest.raises(psycopg.Error) as raised:
            failing.result(timeout=10)
        assert raised.value.sqlstate == "NB003"
        holder.rollback()
        waiter.rollback()

        after = exporter.scrape()
    assert value(after, "numbering_sequences_total", document_type="COR") == 2
    assert value(after, "numbering_sequences_total", document_type="TINY") == 1
    assert value(after, "numbering_reservations", document_type="COR", state="pending") == 1
    assert value(after, "numbering_errors_total", document_type="TINY", code="NB002") == 1
    assert value(after, "numbering_errors_total", document_type="COR", code="NB003") == 1
    assert value(after, "numbering_lock_failures_total", document_type="COR", reason="lock_timeout") == 1
    assert value(after, "numbering_sequence_utilization", document_type="TINY") == 100
    assert value(after, "numbering_sequence_current", document_type="COR", scope="") == 2
    assert value(after, "numbering_lock_wait_seconds_count", document_type="COR") == 2
    assert value(after, "numbering_lock_wait_seconds_bucket", document_type="COR", le="+Inf") == 2
    assert token is not None


def scrape_until(
    exporter: Exporter, done: Callable[[dict[Any, float]], bool], failure: str
) -> dict[Any, float]:
    """Scrape every 0.1 s until ``done`` holds of a scrape (at most 20 s): validation has its own clock."""
    deadline = time.monotonic() + 20
    while not done(found := exporter.scrape()):
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)
    return found


def test_an_unexplained_gap_shows_after_the_background_validation(db: Conn, dsn: str) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    next_number(db, "COR")
    gaps_key = ("numbering_unexplained_gaps", (("document_type", "COR"),))
    with Exporter(dsn, "--validate-interval", "0.2s") as exporter:
        exporter.validated()
        assert exporter.scrape()[gaps_key] == 0
        db.execute("UPDATE docnum.counter SET current_value = current_value + 3")  # planted as superuser
        found = scrape_until(exporter, lambda found: found[gaps_key] == 3, "the gap never showed")
        assert value(found, "numbering_integrity_findings", check="unexplained_gap") == 1
        assert value(found, "numbering_integrity_findings", check="duplicate_number") == 0


def test_a_scrape_answers_when_the_database_is_gone(db: Conn, dsn: str) -> None:
    missing = make_conninfo(dsn, dbname="docnum_no_such_database")
    with Exporter(missing, "--validate-interval", "0") as exporter:
        found = exporter.scrape()
    assert value(found, "numbering_database_up") == 0
    assert [key for key in found if key[0] != "numbering_database_up"] == []


def test_sigterm_stops_the_exporter_cleanly(db: Conn, dsn: str) -> None:
    exporter = Exporter(dsn, "--validate-interval", "0")
    exporter.scrape()
    assert exporter.stop() == 0


def test_once_prints_one_scrape(db: Conn, dsn: str) -> None:
    define(db, "COR", "{TYPE}-{SEQ:5}")
    next_number(db, "COR")
    result = subprocess.run(
        [sys.executable, "-m", "docnum", "metrics", "--once", "--max-scopes", "1"],
        env={**os.environ, embedded.DSN_ENV: dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = samples(result.stdout)
    assert value(found, "numbering_sequences_total", document_type="COR") == 1
    assert value(found, "numbering_unexplained_gaps", document_type="COR") == 0


def test_a_port_in_use_is_a_clear_error(db: Conn, dsn: str) -> None:
    with Exporter(dsn, "--validate-interval", "0") as first:
        result = subprocess.run(
            [sys.executable, "-m", "docnum", "metrics", "--port", str(first.port)],
            env={**os.environ, embedded.DSN_ENV: dsn},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{first.port}" in result.stderr
