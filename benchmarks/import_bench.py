#!/usr/bin/env python3
"""docnum legacy-import benchmark: 100,000 legacy numbers from a CSV file, three ways.

    .venv/bin/python benchmarks/import_bench.py                 # 100,000 rows
    .venv/bin/python benchmarks/import_bench.py --rows 20000    # smaller smoke run

The server is $DOCNUM_DSN (a superuser connection) when set, else a throwaway embedded PostgreSQL 18 started
in a temporary directory. Every path imports the same file into a scratch database of its own (created,
migrated with `docnum.ops.schema.migrate`, dropped at the end), so each starts from an empty ledger:

    batches     the `docnum import` code path in this process: `docnum.interchange.csv_import.import_file`,
                which streams the CSV and calls `Numbering.import_numbers` once per 5,000-row batch (one
                transaction each)
    docnum CLI  the real command, `docnum import FILE --batch-size 5000`, in a subprocess (interpreter start,
                CSV parsing and everything else included)
    one call    one `Numbering.import_numbers` call (one statement, one transaction) with every row

The legacy data: a PROJECT type reset yearly ({SCOPE}/{TYPE}/{YYYY}/{SEQ:5}, 4 projects) and a YEARLY type
({TYPE}-{YYYY}-{SEQ:6}), 2019-2023, about 1 % of the values missing (gaps), rows ordered by their creation
time as an export from the old system would be. After each path the benchmark checks that the ledger holds
every row as imported and that docnum.validate() reports no error.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from docnum import Numbering
from docnum.interchange.csv_import import LegacyCsv, import_file
from docnum.ops import embedded, schema
from run import scratch_database as empty_database
from run import server_dsn

PROJECT_TYPE = ("LEGP", "{SCOPE}/{TYPE}/{YYYY}/{SEQ:5}", "PROJECT", "YEARLY")
YEARLY_TYPE = ("LEGC", "{TYPE}-{YYYY}-{SEQ:6}", "YEARLY", None)
PROJECTS = ("P01", "P02", "P03", "P04")
YEARS = range(2019, 2024)
PROJECT_SHARE = 0.7  # of the rows; the rest are YEARLY-type numbers
MISSING = 0.01  # share of values the old system never used (gaps)
BATCH_SIZE = 5000
ACTOR = "import-bench"


# --------------------------------------------------------------------------------------------------- data


def legacy_rows(total: int, seed: int = 20251123) -> list[dict[str, str]]:
    """``total`` legacy rows over the two types, with gaps, ordered by creation time."""
    rng = random.Random(seed)
    counters: list[tuple[str, str, str | None, int, int]] = []  # (type, format, scope, year, rows)
    project_rows = round(total * PROJECT_SHARE)
    per_project_counter = _split(project_rows, len(PROJECTS) * len(YEARS))
    per_yearly_counter = _split(total - project_rows, len(YEARS))
    for i, (project, year) in enumerate((p, y) for p in PROJECTS for y in YEARS):
        counters.append((PROJECT_TYPE[0], PROJECT_TYPE[1], project, year, per_project_counter[i]))
    for i, year in enumerate(YEARS):
        counters.append((YEARLY_TYPE[0], YEARLY_TYPE[1], None, year, per_yearly_counter[i]))

    rows: list[tuple[datetime, dict[str, str]]] = []
    for code, template, scope, year, count in counters:
        start = datetime(year, 1, 1, tzinfo=timezone.utc)
        seconds_in_year = (datetime(year + 1, 1, 1, tzinfo=timezone.utc) - start).total_seconds()
        value = 0
        moments = sorted(rng.uniform(0, seconds_in_year) for _ in range(count))
        for moment in moments:
            value += 1
            while rng.random() < MISSING:  # a value the old system skipped
                value += 1
            created = start + timedelta(seconds=moment)
            number = (
                template.replace("{SCOPE}", scope or "")
                .replace("{TYPE}", code)
                .replace("{YYYY}", str(year))
                .replace("{SEQ:5}", f"{value:05d}")
                .replace("{SEQ:6}", f"{value:06d}")
            )
            row = {
                "document_type": code,
                "document_number": number,
                "created_at": created.isoformat(timespec="seconds"),
                "document_ref": f"legacy-{code}-{scope or 'all'}-{year}-{value}",
            }
            rows.append((created, row))
    rows.sort(key=lambda item: item[0])
    return [row for _, row in rows]


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def write_csv(rows: list[dict[str, str]], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["document_type", "document_number", "created_at", "document_ref"]
        )
        writer.writeheader()
        writer.writerows(rows)


# --------------------------------------------------------------------------------------------------- server


@contextmanager
def scratch_database(server: str) -> Iterator[str]:
    """A new database with schema docnum and the two legacy types; dropped afterwards."""
    with empty_database(server) as dsn:
        schema.migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            numbering = Numbering(conn)
            for code, template, scope, reset in (PROJECT_TYPE, YEARLY_TYPE):
                numbering.define_type(code, template, scope=scope, reset=reset, actor=ACTOR)
        yield dsn


# --------------------------------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Result:
    path: str
    rows: int
    seconds: float
    calls: int
    checks: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


def via_batches(dsn: str, csv_path: Path) -> tuple[float, int]:
    """The CLI's code path, in process: stream the CSV, one import_numbers call per batch."""
    with psycopg.connect(dsn, application_name="docnum-import-bench") as conn:
        started = time.perf_counter()
        summary = import_file(Numbering(conn), LegacyCsv(csv_path), batch_size=BATCH_SIZE, actor=ACTOR)
        seconds = time.perf_counter() - started
    if summary.imported != summary.rows:
        raise AssertionError(f"batches: {summary.rejected} rejected, first: {summary.rejected_rows[:3]}")
    return seconds, summary.batches


def via_cli(dsn: str, csv_path: Path, total: int) -> tuple[float, int]:
    """The real `docnum import` command in a subprocess (the DSN travels in $DOCNUM_DSN)."""
    script = Path(sys.executable).with_name("docnum")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from docnum.cli.commands import app; app()"]
    )
    command += ["import", str(csv_path), "--batch-size", str(BATCH_SIZE), "--actor", ACTOR]
    env = {**os.environ, embedded.DSN_ENV: dsn}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "rejected 0 " not in done.stdout:
        raise AssertionError(f"docnum import failed ({done.returncode}): {done.stdout}{done.stderr}")
    return seconds, -(-total // BATCH_SIZE)


def via_one_call(dsn: str, rows: list[dict[str, str]]) -> tuple[float, int]:
    """Every row in one import_numbers call: one statement, one transaction."""
    with psycopg.connect(dsn, application_name="docnum-import-bench") as conn:
        started = time.perf_counter()
        results = Numbering(conn).import_numbers(rows, actor=ACTOR)
        seconds = time.perf_counter() - started
    bad = [r for r in results if r.status != "imported"]
    if bad:
        raise AssertionError(f"one call: {len(bad)} rows not imported, first: {bad[:3]}")
    return seconds, 1


#: docnum.validate() as released reads docnum.audit_log once per ledger row (its CTE of earlier formats is
#: inlined into a correlated NOT EXISTS), so its time grows with ledger rows x audit rows: minutes at 20,000
#: numbers, about an hour at 100,000. This partial index makes that inner lookup cheap without changing any
#: result; the benchmark creates it in its throwaway databases only, after the import has been timed.
VALIDATE_WORKAROUND = (
    "CREATE INDEX import_bench_format_history ON docnum.audit_log (document_type)"
    " WHERE operation IN ('DEFINE_TYPE', 'ALTER_TYPE')"
)


def check(dsn: str, expected: int, *, workaround: bool) -> str:
    """The ledger holds every row as imported and validate() reports no error; returns a one-line summary."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        numbering = Numbering(conn)
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'imported'), count(*) FROM docnum.ledger"
        ).fetchone()
        assert row is not None
        imported, total = row
        if imported != expected or total != expected:
            raise AssertionError(f"ledger holds {imported} imported of {total} rows, expected {expected}")
        if workaround:
            conn.execute(VALIDATE_WORKAROUND)
        started = time.perf_counter()
        findings = numbering.validate()
        validate_seconds = time.perf_counter() - started
        gaps = numbering.gaps()
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise AssertionError(f"validate() reports {len(errors)} errors, first: {errors[0]}")
    unexplained = sum(1 for g in gaps if not g.explained)
    return (
        f"ledger {imported:,} imported; validate() in {validate_seconds:.1f} s"
        f"{' (with the index workaround)' if workaround else ''}: {len(errors)} errors,"
        f" {len(findings) - len(errors)} warnings; {len(gaps):,} gaps, {unexplained} unexplained"
    )


# --------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="legacy rows to import (default 100,000)")
    parser.add_argument(
        "--plain-validate",
        action="store_true",
        help="run docnum.validate() without the index workaround (slow; see VALIDATE_WORKAROUND)",
    )
    args = parser.parse_args()

    rows = legacy_rows(args.rows)
    work = Path(tempfile.mkdtemp(prefix="docnum-import-csv-"))
    try:
        csv_path = work / "legacy.csv"
        write_csv(rows, csv_path)
        size_mb = csv_path.stat().st_size / 1e6
        results: list[Result] = []
        with server_dsn() as (server, where):
            with psycopg.connect(server) as conn:
                version = conn.info.parameter_status("server_version")
            print(f"docnum import benchmark: {len(rows):,} rows ({size_mb:.1f} MB CSV),", end=" ")
            print(f"PostgreSQL {version} ({where})")
            paths: list[tuple[str, Callable[[str], tuple[float, int]]]] = [
                ("batches (CLI code path, 5,000/call)", lambda dsn: via_batches(dsn, csv_path)),
                ("docnum import (subprocess)", lambda dsn: via_cli(dsn, csv_path, len(rows))),
                ("one call, all rows", lambda dsn: via_one_call(dsn, rows)),
            ]
            for label, run in paths:
                with scratch_database(server) as dsn:
                    seconds, calls = run(dsn)
                    checks = check(dsn, len(rows), workaround=not args.plain_validate)
                    results.append(Result(label, len(rows), seconds, calls, checks))
                print(f"  {label}: {seconds:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("| path | calls | seconds | rows/s |")
    print("|---|---:|---:|---:|")
    for r in results:
        print(f"| {r.path} | {r.calls} | {r.seconds:.2f} | {r.rows_per_second:,.0f} |")
    print()
    for r in results:
        print(f"{r.path}: {r.checks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
