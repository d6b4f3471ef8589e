#!/usr/bin/env python3
"""What a revision costs the allocations: the same pgbench cell on databases migrated to different revisions,
alternated in one run.

    python benchmarks/revision_cost.py 0006 0007 head                  # hot counter, 8 clients
    python benchmarks/revision_cost.py 0006 head --keys 1000 --clients 32 --runs 5 --seconds 6

Each revision gets a scratch database on the server named by DOCNUM_DSN (or a throwaway embedded one), set
up as run.py sets up its own (a PROJECT type, 1000 counters created up front). Then, run after run, every
database gets one pgbench run of benchmarks/next_number.sql (or --script), in turn and each after a
CHECKPOINT. The output is the median TPS of each revision, its runs, and its cost against the first revision
named. run.py --before REVISION does the same for its whole grid of cells; this script is for a longer look
at one cell, and at more than two revisions.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from docnum import embedded  # noqa: E402
from run import checkpoint, prepare, scratch_database, server_dsn  # noqa: E402


def pgbench(bindir: Path, dsn: str, script: Path, keys: int, clients: int, seconds: int) -> float:
    params = conninfo_to_dict(dsn)
    env = {**os.environ}
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    result = subprocess.run(
        [
            str(bindir / "pgbench"),
            "--no-vacuum",
            "--protocol=prepared",
            f"--client={clients}",
            f"--jobs={min(2, clients)}",
            f"--time={seconds}",
            f"--file={script}",
            f"--define=keys={keys}",
            dsn,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    found = re.search(r"tps = ([\d.]+)", result.stdout)
    if result.returncode != 0 or not found:
        raise SystemExit(f"pgbench failed:\n{result.stderr[-2000:]}")
    return float(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "revisions", nargs="+", help="Alembic revisions (0006, head...); the first is the base"
    )
    parser.add_argument("--keys", type=int, default=1, help="counters the script spreads over (default 1)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--script", type=Path, default=HERE / "next_number.sql")
    args = parser.parse_args(argv)
    if len(args.revisions) < 2:
        parser.error("name at least two revisions: the base and one to compare")

    bindir = embedded.pg_bindir()
    tps: dict[str, list[float]] = {revision: [] for revision in args.revisions}
    with ExitStack() as stack:
        server, where = stack.enter_context(server_dsn())
        dsns = {}
        for revision in args.revisions:
            dsns[revision] = stack.enter_context(scratch_database(server))
            settings = prepare(dsns[revision], None, revision)
        for run in range(1, args.runs + 1):
            for revision, dsn in dsns.items():
                checkpoint(dsn)
                tps[revision].append(pgbench(bindir, dsn, args.script, args.keys, args.clients, args.seconds))
                print(f"run {run} {revision}: {tps[revision][-1]:,.0f} tps", file=sys.stderr)
        with psycopg.connect(server) as conn:
            row = conn.execute("SELECT current_setting('server_version')").fetchone()
    base = statistics.median(tps[args.revisions[0]])
    print(
        f"{args.script.name}, {args.keys} counter(s), {args.clients} clients, {args.runs} alternated runs x "
        f"{args.seconds} s; {where}, PostgreSQL {row[0] if row else '?'}, fsync={settings['fsync']}"
    )
    for revision, values in tps.items():
        median = statistics.median(values)
        cost = "" if revision == args.revisions[0] else f"  cost {1 - median / base:+.1%}"
        runs = ", ".join(f"{value:,.0f}" for value in values)
        print(f"  {revision:>6}: median {median:,.0f} tps ({runs}){cost}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
