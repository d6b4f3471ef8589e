"""The administration and report commands of the docnum CLI, run with CliRunner against a real database."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner, Result

from docnum import Numbering
from docnum.cli.commands import AUDIT_EXPORT_COLUMNS, app


def run(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--dsn", dsn, *args])


def write_csv(path: Path, header: str, *lines: str) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def numbering(db: psycopg.Connection[Any]) -> Numbering:
    """A client on the test database with RFA (per project, yearly, override allowed) and COR (global)."""
    client = Numbering(db)
    client.define_type(
        "RFA", "{SCOPE}/{TYPE}/{YYYY}/{SEQ:4}", scope="PROJECT", reset="YEARLY", allow_manual_override=True
    )
    client.define_type("COR", "{TYPE}-{SEQ:4}")
    return client


def test_import_reports_rejected_rows_with_their_line(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "legacy.csv",
        "Document_Type,document_number,created_at,document_ref,title",
        "RFA,P1/RFA/2019/0001,2019-01-05,ref-1,first",
        "RFA,P1/RFA/2019/0002,,,second",
        "",
        "RFA,P1/RFA/2019/0007,2019-02-01T09:30:00+07:00,ref-7,",
        "RFA,P1-RFA-2019-0008,,,bad format",
        'COR,COR-0003,,"a ref, with a comma",',
    )
    result = run(dsn, "import", str(source), "--actor", "migration", "--batch-size", "2")
    assert result.exit_code == 1, result.output  # a rejected row is a finding
    assert "imported 4, already present 0, rejected 1 (5 rows in 3 batches" in result.stdout
    rejected = [line for line in result.stdout.splitlines() if "P1-RFA-2019-0008" in line]
    assert len(rejected) == 1 and rejected[0].split()[:2] == ["6", "RFA"]
    assert "does not match the format" in result.stdout

    rows = db.execute(
        "SELECT document_number, state, actor, document_ref, issued_at FROM docnum.ledger"
        " ORDER BY document_number"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("COR-0003", "imported", "migration"),
        ("P1/RFA/2019/0001", "imported", "migration"),
        ("P1/RFA/2019/0002", "imported", "migration"),
        ("P1/RFA/2019/0007", "imported", "migration"),
    ]
    assert rows[0][3] == "a ref, with a comma"
    assert rows[3][4] == datetime(2019, 2, 1, 2, 30, tzinfo=timezone.utc)

    again = run(dsn, "import", str(source))
    assert again.exit_code == 1, again.output
    assert "imported 0, already present 4, rejected 1 (5 rows in 1 batch," in again.stdout


def test_import_caps_the_rejected_table(dsn: str, numbering: Numbering, tmp_path: Path) -> None:
    lines = [f"COR,bad-{i}" for i in range(55)] + ["COR,COR-0001"]
    source = write_csv(tmp_path / "bad.csv", "document_type,document_number", *lines)
    result = run(dsn, "import", str(source))
    assert result.exit_code == 1, result.output
    assert "imported 1, already present 0, rejected 55" in result.stdout
    assert "bad-49" in result.stdout and "bad-50" not in result.stdout
    assert "... and 5 more rejected rows not shown" in result.stdout


def test_import_refuses_a_file_without_the_required_columns(dsn: str, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "wrong.csv", "type,number", "COR,COR-0001")
    result = run(dsn, "import", str(source))
    assert result.exit_code == 2
    message = " ".join(result.output.replace("│", " ").split())  # the usage error comes in a wrapped box
    assert "wrong.csv has no column document_type, document_number (its header: type, number)" in message


def test_override_void_replace_set_and_history(dsn: str, numbering: Numbering) -> None:
    first = numbering.next_number("RFA", scope="P1")
    year = first.split("/")[2]

    result = run(dsn, "override", "RFA", f"P1/RFA/{year}/0009", "--reason", "paper register", "--actor", "al")
    assert (result.exit_code, result.stdout) == (0, f"P1/RFA/{year}/0009\n")
    assert (
        run(dsn, "override", "RFA", "anything", "--reason", "r", "--skip-validation").stdout == "anything\n"
    )
    assert run(dsn, "void", f"P1/RFA/{year}/0009", "--reason", "twice").stdout == f"P1/RFA/{year}/0009\n"

    replaced = run(dsn, "replace", first, "--reason", "typo", "--actor", "bob")
    assert (replaced.exit_code, replaced.stdout) == (0, f"P1/RFA/{year}/0010\n")

    counter = run(dsn, "set", "RFA", "20", "--scope", "P1", "--period", year, "--reason", "align")
    assert (counter.exit_code, counter.stdout) == (0, f"counter RFA P1 {year} set to 20\n")
    assert numbering.next_number("RFA", scope="P1") == f"P1/RFA/{year}/0021"

    history = run(dsn, "history", first, "--json")
    assert history.exit_code == 0, history.output
    trail = json.loads(history.stdout)
    assert [(e["operation"], e["document_number"]) for e in trail] == [
        ("NEXT", first),
        ("VOID", first),
        ("REPLACE", f"P1/RFA/{year}/0010"),
        ("REPLACE_LINK", first),
    ]
    table = run(dsn, "history", first)
    assert table.exit_code == 0 and "REPLACE_LINK" in table.stdout


def test_admin_errors_are_one_line(dsn: str, numbering: Numbering) -> None:
    missing = run(dsn, "void", "COR-0042", "--reason", "x")
    assert missing.exit_code == 1
    assert missing.output.splitlines()[0] == "error NB011: number 'COR-0042' was never issued"
    assert "  detail: " in missing.output and "  hint: " in missing.output
    assert "Traceback" not in missing.output

    refused = run(dsn, "override", "COR", "COR-0100", "--reason", "manual")
    assert refused.exit_code == 1 and refused.output.startswith("error NB007: ")
    assert run(dsn, "set", "NOPE", "3", "--reason", "x").output.startswith("error NB001: ")
    assert run(dsn, "void", "COR-0042").exit_code == 2  # --reason is required


def test_status_and_gaps(dsn: str, numbering: Numbering) -> None:
    numbering.next_number("RFA", scope="P1")
    numbering.next_number("COR")
    numbering.set_counter("COR", value=4, reason="paper numbers")

    result = run(dsn, "status", "--json")
    assert result.exit_code == 0, result.output
    counters = json.loads(result.stdout)
    assert [(c["document_type"], c["scope_value"], c["current_value"]) for c in counters] == [
        ("COR", "", 4),
        ("RFA", "P1", 1),
    ]
    assert counters[0]["utilisation_pct"] == 0.04 and counters[0]["confirmed"] == 1
    assert json.loads(run(dsn, "status", "RFA", "--json").stdout)[0]["scope_value"] == "P1"
    table = run(dsn, "status")
    assert table.exit_code == 0 and "COR" in table.stdout and "1 confirmed" in table.stdout
    assert run(dsn, "status", "NOPE").output.startswith("error NB001: document type 'NOPE' is not defined")

    gaps = run(dsn, "gaps", "COR")
    assert gaps.exit_code == 0, gaps.output
    assert "2..4" in gaps.stdout and "paper numbers" in gaps.stdout
    assert "3 values never issued in 1 range; 0 unexplained" in gaps.stdout
    found = json.loads(run(dsn, "gaps", "--json").stdout)
    assert [(g["first_value"], g["last_value"], g["value_count"], g["source"]) for g in found] == [
        (2, 4, 3, "SET_COUNTER")
    ]
    assert run(dsn, "gaps", "RFA", "--scope", "P1").stdout == "no gaps\n"
    assert json.loads(run(dsn, "gaps", "RFA", "--scope", "P1", "--json").stdout) == []

    numbering.set_counter("COR", value=9000, reason="a jump")
    big = run(dsn, "gaps", "COR")
    assert big.exit_code == 0, big.output
    assert "5..9000" in big.stdout and "8,999 values never issued in 2 ranges; 0 unexplained" in big.stdout


def test_validate_and_check_duplicates_exit_codes(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering
) -> None:
    number = numbering.next_number("COR")
    healthy = run(dsn, "validate")
    assert (healthy.exit_code, healthy.stdout) == (0, "healthy: no findings\n")
    assert json.loads(run(dsn, "validate", "--json").stdout) == []
    assert run(dsn, "check-duplicates").exit_code == 0

    db.execute("CREATE TABLE public.letters (doc_no text)")
    db.execute(
        "SELECT docnum.register_document_table(table_name => 'public.letters', number_column => 'doc_no')"
    )
    db.execute("INSERT INTO public.letters VALUES (%s), (%s)", (number, number))

    duplicates = run(dsn, "check-duplicates", "--json")
    assert duplicates.exit_code == 1
    assert json.loads(duplicates.stdout) == [
        {
            "document_number": number,
            "occurrences": 3,
            "found_in": ["docnum.ledger", "public.letters", "public.letters"],
            "problem": None,
        }
    ]
    assert number in run(dsn, "check-duplicates").stdout

    report = run(dsn, "validate")
    assert report.exit_code == 1
    assert "duplicate_number" in report.stdout and "1 error(s), 0 warning(s)" in report.stdout
    findings = json.loads(run(dsn, "validate", "--json").stdout)
    assert [(f["check_name"], f["severity"]) for f in findings] == [("duplicate_number", "error")]


def test_audit_export_csv_and_jsonl(
    db: psycopg.Connection[Any], dsn: str, numbering: Numbering, tmp_path: Path
) -> None:
    for _ in range(3):
        numbering.next_number("COR", actor="alice")
    numbering.next_number("RFA", scope="P1", actor="bob")
    expected = db.execute(
        "SELECT audit_id, operation, document_number, new_value FROM docnum.audit_trail ORDER BY audit_id"
    ).fetchall()
    today = datetime.now(timezone.utc).date()
    window = ["--start", (today - timedelta(days=1)).isoformat(), "--end", today.isoformat()]

    as_csv = tmp_path / "audit.csv"
    result = run(dsn, "audit-export", *window, "--format", "csv", "--output", str(as_csv))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {len(expected)} audit rows (")
    with as_csv.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == AUDIT_EXPORT_COLUMNS
    assert AUDIT_EXPORT_COLUMNS[:3] == ("audit_id", "occurred_at", "operation")
    assert [(int(r[0]), r[2], r[4] or None) for r in rows[1:]] == [tuple(e[:3]) for e in expected]
    assert [json.loads(r[11]) for r in rows[1:]] == [e[3] for e in expected]
    assert all(datetime.fromisoformat(r[1]).tzinfo is not None for r in rows[1:])

    as_jsonl = tmp_path / "audit.jsonl"
    result = run(
        dsn, "audit-export", *window, "--type", "COR", "--format", "jsonl", "--output", str(as_jsonl)
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in as_jsonl.read_text(encoding="utf-8").splitlines()]
    assert all(list(record) == list(AUDIT_EXPORT_COLUMNS) for record in records)
    expected_types = db.execute("SELECT document_type FROM docnum.audit_trail ORDER BY audit_id").fetchall()
    cor = [e for e, (kind,) in zip(expected, expected_types, strict=True) if kind == "COR"]
    assert [(r["audit_id"], r["operation"], r["new_value"]) for r in records] == [
        (e[0], e[1], e[3]) for e in cor
    ]
    assert result.stdout.startswith(f"wrote {len(records)} audit rows (")

    before = ["--start", "2000-01-01", "--end", "2000-01-01T12:00", "--output", str(tmp_path / "empty.csv")]
    empty = run(dsn, "audit-export", *before)
    assert empty.exit_code == 0 and empty.stdout.startswith("wrote 0 audit rows")
    assert (tmp_path / "empty.csv").read_text(encoding="utf-8").startswith("audit_id,occurred_at,")

    backwards = run(
        dsn, "audit-export", "--start", "2025-02-01", "--end", "2025-01-01", "-o", str(tmp_path / "x")
    )
    assert backwards.exit_code == 2 and not (tmp_path / "x").exists()
    assert run(dsn, "audit-export", "--start", "yesterday", "--end", "2025-01-01", "-o", "x").exit_code == 2
