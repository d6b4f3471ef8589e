#!/usr/bin/env python3
"""What a revision costs the allocations: the same pgbench cell on databases migrated to different revisions,
alternated in one run.

    python benchmarks/revision_cost.py 0006 0007 head                  # hot counter, 8 clients
    python benchmarks/revision_cost.py 0006 head --keys 1000 --clients 32 --runs 5 --seconds 6
    python benchmarks/revision_cost.py 0006 head queue=head+whatif.sql --clients 1 8 32 --keys 1 1000

A name=REVISION+FILE engine is a what-if: the database at REVISION, then FILE run in it (as a superuser; the
file sets its own role). Several --clients and --keys make a grid: every cell alternates the engines within
each run. Each revision gets a scratch database on the server named by DOCNUM_DSN (or a throwaway embedded
one), set up as run.py sets up its own (a PROJECT type, 1000 counters created up front). Then, run after run,
every database gets one pgbench run of benchmarks/next_number.sql (or --script), in turn and each after a
CHECKPOINT. The output is the median TPS of each revision, its runs, and its cost against the first revision
named. run.py --before REVISION does the same for its whole grid of cells; this script is for a longer look at
one cell, and at more than two revisions."""

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
from psycopg.conninfo import conninfo_to_dict, make_conninfo

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from docnum.ops import embedded  # noqa: E402
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


def setup(server: str, spec: str, stack: ExitStack) -> tuple[str, dict[str, str]]:
    """A scratch database for one engine: NAME, or NAME=REVISION[+FILE] (FILE run after the migration)."""
    _, _, target = spec.partition("=")
    revision, _, extra = (target or spec).partition("+")
    dsn = stack.enter_context(scratch_database(server))
    settings = prepare(dsn, None, revision)
    if extra:  # psql runs it as a script: statements one by one, VACUUM included
        params = conninfo_to_dict(dsn)
        env = {**os.environ, "PGPASSWORD": str(params.get("password") or "")}
        target = make_conninfo(**{k: str(v) for k, v in params.items() if k != "password"})
        subprocess.run(
            [str(embedded.pg_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", extra, target],
            env=env,
            check=True,
        )
    return dsn, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "revisions",
        nargs="+",
        metavar="ENGINE",
        help="Alembic revisions (0006, head...) or NAME=REVISION+FILE what-ifs; the first is the base",
    )
    parser.add_argument("--keys", type=int, nargs="+", default=[1], help="counters the script spreads over")
    parser.add_argument("--clients", type=int, nargs="+", default=[8])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--script", type=Path, default=HERE / "next_number.sql")
    parser.add_argument(
        "--major", type=int, choices=[15, 16, 17, 18], help="a throwaway server of this major (see run.py)"
    )
    args = parser.parse_args(argv)
    if len(args.revisions) < 2:
        parser.error("name at least two engines: the base and one to compare")

    bindir = embedded.pg_bindir()
    names = [spec.partition("=")[0] for spec in args.revisions]
    cells = [(keys, clients) for keys in args.keys for clients in args.clients]
    tps: dict[tuple[int, int], dict[str, list[float]]] = {
        cell: {name: [] for name in names} for cell in cells
    }
    with ExitStack() as stack:
        server_dsn_, where = stack.enter_context(server_dsn(args.major))
        dsns = {}
        for name, spec in zip(names, args.revisions, strict=True):
            dsns[name], settings = setup(server_dsn_, spec, stack)
        for run in range(1, args.runs + 1):
            for keys, clients in cells:
                order = list(dsns.items())
                if run % 2 == 0:  # alternate who goes first
                    order.reverse()
                for name, dsn in order:
                    checkpoint(dsn)
                    value = pgbench(bindir, dsn, args.script, keys, clients, args.seconds)
                    tps[(keys, clients)][name].append(value)
                    print(f"run {run} {keys} key(s) c={clients} {name}: {value:,.0f} tps", file=sys.stderr)
        with psycopg.connect(server_dsn_) as conn:
            row = conn.execute("SELECT current_setting('server_version')").fetchone()
    print(
        f"{args.script.name}, {args.runs} alternated runs x {args.seconds} s per cell; {where}, PostgreSQL "
        f"{row[0] if row else '?'}, fsync={settings['fsync']}; median tps, and against {names[0]}"
    )
    print(f"{'keys':>5} {'clients':>7}  " + "  ".join(f"{name:>16}" for name in names))
    for keys, clients in cells:
        base = statistics.median(tps[(keys, clients)][names[0]])
        columns = []
        for name in names:
            median = statistics.median(tps[(keys, clients)][name])
            columns.append(f"{median:>8,.0f}" + ("" if name == names[0] else f" {median / base - 1:+6.1%}"))
        print(f"{keys:>5} {clients:>7}  " + "  ".join(f"{column:>16}" for column in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
