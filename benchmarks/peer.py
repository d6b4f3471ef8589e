#!/usr/bin/env python3
"""docnum beside the Redis-lock design: one Python load generator, one hot counter, 50 clients.

    .venv/bin/python benchmarks/peer.py                # 3 alternating runs x 10 s per side, 50 clients
    .venv/bin/python benchmarks/peer.py --quick        # smoke: 1 run x 2 s per side

Two sides, run alternately (the order flips every run, each run after a CHECKPOINT), each from the same
threads with one psycopg connection per client (a psycopg_pool pool of exactly that many, every statement
prepared), all allocating on one counter for the same number of seconds:

    docnum  SELECT docnum.next_number(document_type => 'BENCH', scope => 'P1') in autocommit: one statement,
            one transaction
    redlock the Redis-lock design's SequenceService.getSequenceWithRedlock (its backend implementation
            guide, section 3.1):
            `redlock.acquire([lockKey], 5000, {retryCount: 3, retryDelay: 200, retryJitter: 100})` on the key
            numbering:<type>:<scope> (SET NX PX 5000 with a random token: 4 attempts, 100-300 ms apart, as
            node-redlock counts them; released by token with a compare-and-delete script), then in one
            PostgreSQL transaction SELECT ... FOR UPDATE on the sequence row, UPDATE it and INSERT an audit
            row, on that design's own tables and indexes (schema `redlock`, created by this script). A request
            that cannot get the lock within its retries fails, as that design's does; its lock-free fallback
            (taken only when Redis is down) and its cancelled-number lookup are left out, which only helps it.

For each side: numbers per second (successful allocations over the run's seconds), p50/p99 latency of the
successful requests (lock waits and retries included), failures, and starved clients (fewer than 20 % of an
equal share, or none at all). Each run also checks its numbers: docnum's are gapless and unique, the
Redis-lock design's unique. Numbers/s, p50 and p99 are medians over runs; failures are summed; starved
clients: the worst run.

Redis is Debian's redis-server, started here on a free loopback port without persistence and stopped by its
pid at the end (installed with apt-get when missing, as root); the client is redis-py (`pip install
'docnum[bench]'`). The PostgreSQL server is $DOCNUM_DSN or a throwaway embedded one, and both sides work in
one scratch database, as in run.py.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run.py's helpers, also when this file is imported from elsewhere
    sys.path.insert(0, str(HERE))

from run import TYPE_CODE, checkpoint, percentile, prepare, scratch_database, server_dsn  # noqa: E402

if TYPE_CHECKING:
    import redis

# The Redis-lock design's lock (its guide, 3.1 Sequence Service and 15.2 environment variables).
LOCK_TTL_MS = 5000  # redlock.acquire([lockKey], 5000, ...), NUMBERING_LOCK_TIMEOUT=5000
RETRY_COUNT = 3  # retryCount: 3, NUMBERING_RETRY_ATTEMPTS=3 (node-redlock: 1 attempt + 3 retries)
RETRY_DELAY_MS = 200  # retryDelay: 200, NUMBERING_RETRY_DELAY=200
RETRY_JITTER_MS = 100  # retryJitter: 100 (each delay uniform in retryDelay +- retryJitter)

SCOPE = "P1"  # the hot counter: run.py's setup creates it for docnum, redlock_setup for the Redis-lock design
CLIENTS = 50
STARVED_SHARE = 0.2  # a client served less than this fraction of an equal share is starved

DOCNUM_SQL = "SELECT docnum.next_number(document_type => %s, scope => %s)"

# That design's entities (section 2) in PostgreSQL: configs, sequences (unique config_id + scope_value) and
# the audit log with the four indexes its entity declares.
REDLOCK_SETUP_SQL = """
CREATE SCHEMA redlock;
CREATE TABLE redlock.document_numbering_configs (
    id serial PRIMARY KEY,
    document_type varchar(50) NOT NULL UNIQUE,
    format varchar(200) NOT NULL,
    scope text NOT NULL DEFAULT 'GLOBAL'
        CHECK (scope IN ('GLOBAL', 'PROJECT', 'CONTRACT', 'YEARLY', 'MONTHLY')),
    allow_manual_override boolean NOT NULL DEFAULT false,
    max_value bigint NOT NULL DEFAULT 999999,
    metadata jsonb,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE redlock.document_numbering_sequences (
    id serial PRIMARY KEY,
    config_id integer NOT NULL REFERENCES redlock.document_numbering_configs (id),
    scope_value varchar(50),
    current_value bigint NOT NULL DEFAULT 0,
    last_used_at timestamp,
    created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (config_id, scope_value)
);
CREATE TABLE redlock.document_numbering_audit_logs (
    id bigserial PRIMARY KEY,
    operation varchar(50) NOT NULL,
    document_type varchar(50),
    document_number varchar(50),
    old_value text,
    new_value text,
    user_id integer NOT NULL,
    ip_address varchar(45),
    user_agent varchar(500),
    "timestamp" timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    metadata jsonb
);
CREATE INDEX ON redlock.document_numbering_audit_logs (operation);
CREATE INDEX ON redlock.document_numbering_audit_logs (document_number);
CREATE INDEX ON redlock.document_numbering_audit_logs (user_id);
CREATE INDEX ON redlock.document_numbering_audit_logs ("timestamp");
INSERT INTO redlock.document_numbering_configs (document_type, format, scope, max_value)
    VALUES ('BENCH', '{PROJECT}/{TYPE}/{YYYY}/{SEQ:6}', 'PROJECT', 999999999999);
INSERT INTO redlock.document_numbering_sequences (config_id, scope_value)
    SELECT id, 'P1' FROM redlock.document_numbering_configs WHERE document_type = 'BENCH';
"""
REDLOCK_SELECT = (
    "SELECT id, current_value FROM redlock.document_numbering_sequences"
    " WHERE config_id = %s AND scope_value = %s FOR UPDATE"
)
REDLOCK_UPDATE = (
    "UPDATE redlock.document_numbering_sequences SET current_value = %s, last_used_at = CURRENT_TIMESTAMP"
    " WHERE id = %s"
)
REDLOCK_AUDIT = (
    "INSERT INTO redlock.document_numbering_audit_logs (operation, document_type, document_number, user_id,"
    " metadata) VALUES ('RESERVE', %s, %s, %s, %s)"
)
# node-redlock's release: delete the key only while it still holds this request's token.
RELEASE_LUA = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
else
    return 0
end
"""


class LockNotAcquired(Exception):
    """The Redis-lock design's request failed: the Redis lock stayed taken through every retry."""


# --------------------------------------------------------------------------------------------------- results


@dataclass
class SideRun:
    """One side's run: what every client got, how long each success took, which values were issued."""

    side: str
    seconds: float
    per_client: list[int]  # successful allocations per client
    latencies_us: list[int]  # successful requests, ascending
    failures: int = 0
    errors: list[str] = field(default_factory=list)  # first few database errors, for the report
    values: list[int] = field(default_factory=list)  # sequence values issued, in completion order

    @property
    def numbers(self) -> int:
        return sum(self.per_client)

    @property
    def numbers_per_s(self) -> float:
        return self.numbers / self.seconds

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_us, 0.50) / 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_us, 0.99) / 1000

    @property
    def starved(self) -> int:
        """Clients served fewer than STARVED_SHARE of an equal share of the numbers, or none at all."""
        fair = self.numbers / len(self.per_client) if self.per_client else 0.0
        return sum(1 for n in self.per_client if n == 0 or n < STARVED_SHARE * fair)

    def duplicates(self) -> int:
        return len(self.values) - len(set(self.values))

    def gaps(self) -> int:
        """Values missing between the least and the greatest issued."""
        if not self.values:
            return 0
        return max(self.values) - min(self.values) + 1 - len(set(self.values))


# --------------------------------------------------------------------------------------------------- redis


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary(install: bool) -> str:
    """The redis-server program; installs Debian's package with apt-get when it is missing and `install`."""
    found = shutil.which("redis-server")
    if found:
        return found
    if not install or os.geteuid() != 0:
        raise SystemExit(
            "redis-server is not installed: run `apt-get install redis-server` as root (on a host with "
            "systemd that also starts a system-wide Redis on port 6379; this benchmark starts its own)"
        )
    print("redis-server is not installed: installing Debian's redis-server with apt-get", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "redis-server"], check=True, env=env)
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("apt-get installed redis-server but it is not on PATH")
    return found


@contextmanager
def redis_server(binary: str | None = None) -> Iterator[int]:
    """Start redis-server on a free loopback port, without persistence; yield the port; stop it by its pid."""
    import redis

    port = free_port()
    command = [binary or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    detail = process.stderr.read().decode(errors="replace") if process.stderr else ""
                    raise RuntimeError(f"redis-server did not start on port {port}: {detail}") from None
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        process.terminate()  # SIGTERM to this pid: redis-server exits at once (nothing to save)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


# --------------------------------------------------------------------------------------------------- sides

#: One client's allocation: (connection, client state) -> the sequence value issued; raises LockNotAcquired
#: (or a psycopg error) when it fails.
Allocate = Callable[[psycopg.Connection[Any], Any], int]


def docnum_allocate(conn: psycopg.Connection[Any], _state: Any) -> int:
    row = conn.execute(DOCNUM_SQL, (TYPE_CODE, SCOPE), prepare=True).fetchone()
    assert row is not None
    return int(re.search(r"([0-9]+)$", row[0]).group(1))  # type: ignore[union-attr]


@dataclass
class RedlockClient:
    """One Redis-lock client's Redis connection and its config (that design caches configs)."""

    redis: redis.Redis
    release: Any  # the registered release script
    config_id: int
    rng: random.Random


def redlock_lock(client: RedlockClient, key: str) -> str:
    """redlock.acquire([key], LOCK_TTL_MS, {retryCount, retryDelay, retryJitter}) on one Redis: the token."""
    token = secrets.token_hex(16)
    for attempt in range(RETRY_COUNT + 1):
        if client.redis.set(key, token, nx=True, px=LOCK_TTL_MS):
            return token
        if attempt < RETRY_COUNT:
            jitter = int((client.rng.random() * 2 - 1) * RETRY_JITTER_MS)
            time.sleep(max(0, RETRY_DELAY_MS + jitter) / 1000)
    raise LockNotAcquired(f"Exceeded {RETRY_COUNT} retries to lock {key}")


def redlock_allocate(conn: psycopg.Connection[Any], client: RedlockClient) -> int:
    """That design's getSequenceWithRedlock: Redis lock, then FOR UPDATE, UPDATE and the audit INSERT in one
    transaction, then the lock's release."""
    key = f"numbering:{TYPE_CODE}:{SCOPE}"
    token = redlock_lock(client, key)
    try:
        with conn.transaction():
            row = conn.execute(REDLOCK_SELECT, (client.config_id, SCOPE), prepare=True).fetchone()
            assert row is not None, "redlock_setup creates the sequence row"
            sequence_id, current = row
            value = int(current) + 1
            conn.execute(REDLOCK_UPDATE, (value, sequence_id), prepare=True)
            number = f"{SCOPE}/{TYPE_CODE}/{datetime.now():%Y}/{value:06d}"
            metadata = Jsonb({"token": token, "scope_value": SCOPE})
            conn.execute(REDLOCK_AUDIT, (TYPE_CODE, number, 1, metadata), prepare=True)
        return value
    finally:
        client.release(keys=[key], args=[token])


def redlock_setup(conn: psycopg.Connection[Any]) -> None:
    """Create the Redis-lock design's tables and its hot sequence row (schema `redlock`) in this database."""
    with conn.transaction():
        conn.execute(REDLOCK_SETUP_SQL)


def drive(
    side: str,
    dsn: str,
    clients: int,
    seconds: float,
    allocate: Allocate,
    client_state: Callable[[int], Any] = lambda _: None,
) -> SideRun:
    """Run `allocate` in a loop on `clients` threads, one pooled connection each, for `seconds`.

    Only requests that complete within the window count (as a number or a failure); one in flight at its end
    finishes but is not counted. A client that stops on anything but a failed request stops the run.
    """
    per_client = [0] * clients
    latencies: list[list[int]] = [[] for _ in range(clients)]
    values: list[list[int]] = [[] for _ in range(clients)]
    failures = [0] * clients
    errors: list[str] = []
    crashed: list[BaseException] = []
    window: list[float] = []  # [deadline], set once every client holds its connection
    start = threading.Barrier(clients, action=lambda: window.append(time.perf_counter() + seconds))

    with ConnectionPool(
        dsn,
        min_size=clients,
        max_size=clients,
        kwargs={"autocommit": True, "application_name": f"docnum-peer-{side}"},
        open=True,
    ) as pool:
        pool.wait(timeout=60)

        def client(i: int) -> None:
            try:
                state = client_state(i)
                with pool.connection() as conn:
                    start.wait(timeout=60)
                    deadline = window[0]
                    while (began := time.perf_counter()) < deadline:
                        value = None
                        try:
                            value = allocate(conn, state)
                        except LockNotAcquired:
                            pass
                        except psycopg.Error as exc:
                            if len(errors) < 5:
                                errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
                        ended = time.perf_counter()
                        if value is not None:
                            values[i].append(value)  # issued even when it finished late: the checks need it
                        if ended > deadline:  # in flight when the window closed: not counted
                            break
                        if value is None:
                            failures[i] += 1
                        else:
                            per_client[i] += 1
                            latencies[i].append(int((ended - began) * 1_000_000))
            except BaseException as exc:
                crashed.append(exc)
                start.abort()  # release the others if this client never reached the start

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    real = [exc for exc in crashed if not isinstance(exc, threading.BrokenBarrierError)]
    if real or crashed:
        raise RuntimeError(f"{side}: {len(crashed)} client(s) stopped on an error") from (real or crashed)[0]

    return SideRun(
        side=side,
        seconds=seconds,
        per_client=per_client,
        latencies_us=sorted(v for lat in latencies for v in lat),
        failures=sum(failures),
        errors=errors,
        values=[v for vs in values for v in vs],
    )


def run_docnum(dsn: str, clients: int, seconds: float) -> SideRun:
    """docnum's side: next_number on the hot counter (run.py's setup must have run in this database)."""
    return drive("docnum", dsn, clients, seconds, docnum_allocate)


def run_redlock(dsn: str, redis_port: int, clients: int, seconds: float) -> SideRun:
    """The Redis-lock side: its Redis lock on `redis_port`, then its transaction (after redlock_setup)."""
    import redis

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT id FROM redlock.document_numbering_configs WHERE document_type = %s", (TYPE_CODE,)
        ).fetchone()
        assert row is not None, "redlock_setup creates the BENCH config"
        config_id = int(row[0])
    made: list[redis.Redis] = []
    lock = threading.Lock()

    def state(i: int) -> RedlockClient:
        r = redis.Redis(host="127.0.0.1", port=redis_port)
        with lock:
            made.append(r)
        return RedlockClient(r, r.register_script(RELEASE_LUA), config_id, random.Random(i))

    try:
        return drive("redlock", dsn, clients, seconds, redlock_allocate, state)
    finally:
        for r in made:
            r.close()


# --------------------------------------------------------------------------------------------------- report


@dataclass
class Side:
    label: str
    runs: list[SideRun] = field(default_factory=list)

    @property
    def numbers_per_s(self) -> float:
        return statistics.median(r.numbers_per_s for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.runs)

    @property
    def requests(self) -> int:
        return sum(r.numbers + r.failures for r in self.runs)

    @property
    def starved(self) -> int:
        return max(r.starved for r in self.runs)


def check_run(result: SideRun, gapless: bool) -> str:
    """The run's numbers: unique (both sides) and gapless (docnum); raises when they are not."""
    if result.duplicates():
        raise AssertionError(f"{result.side}: {result.duplicates()} duplicate numbers")
    if gapless and result.gaps():
        raise AssertionError(f"{result.side}: {result.gaps()} gaps in {len(result.values)} numbers")
    return f"{len(result.values):,} numbers, unique" + (", gapless" if gapless else "")


def report_rows(docnum: Side, redlock: Side, clients: int) -> list[list[str]]:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    def failed(side: Side) -> str:
        share = side.failures / side.requests * 100 if side.requests else 0.0
        return f"{side.failures:,} ({share:.1f} %)"

    return [
        ["", docnum.label, redlock.label, "docnum / Redis lock"],
        [
            "numbers/s",
            f"{docnum.numbers_per_s:,.0f}",
            f"{redlock.numbers_per_s:,.0f}",
            ratio(docnum.numbers_per_s, redlock.numbers_per_s),
        ],
        ["p50 ms", f"{docnum.p50_ms:.1f}", f"{redlock.p50_ms:.1f}", ratio(docnum.p50_ms, redlock.p50_ms)],
        ["p99 ms", f"{docnum.p99_ms:.1f}", f"{redlock.p99_ms:.1f}", ratio(docnum.p99_ms, redlock.p99_ms)],
        ["failures", failed(docnum), failed(redlock), ""],
        ["starved clients", f"{docnum.starved} of {clients}", f"{redlock.starved} of {clients}", ""],
    ]


def verdict(docnum: Side, redlock: Side) -> str:
    """The target beside the Redis-lock design: more numbers per second, lower p99, zero failures."""
    checks = {
        "more numbers/s": docnum.numbers_per_s > redlock.numbers_per_s,
        "lower p99": docnum.p99_ms < redlock.p99_ms,
        "zero failures": docnum.failures == 0,
        "no starved client": docnum.starved == 0,
    }
    missed = [name for name, ok in checks.items() if not ok]
    what = ", ".join(checks)
    return f"target beside the Redis-lock design ({what}): " + (
        "met" if not missed else f"MISSED ({', '.join(missed)})"
    )


def render(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def markdown(rows: list[list[str]], context: list[str], lines: list[str]) -> str:
    out = ["# docnum beside the Redis-lock design it replaces", "", *[f"- {line}" for line in context], ""]
    out += ["| " + " | ".join(rows[0]) + " |", "|---|" + "---:|" * (len(rows[0]) - 1)]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    out += ["", *[f"- {line}" for line in lines], ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"clients per side (default {CLIENTS})")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per run and side (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per side (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run x 2 s per side")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="fail instead of installing Debian's redis-server with apt-get when it is missing",
    )
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as Markdown")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.seconds = 1, 2.0
    if args.runs < 1 or args.seconds <= 0 or args.clients < 1:
        parser.error("--runs, --seconds and --clients must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import redis  # noqa: F401
    except ImportError:
        raise SystemExit(
            "redis-py is missing: pip install 'docnum[bench]' (or pip install 'redis>=5')"
        ) from None
    binary = redis_server_binary(install=not args.no_install)
    print(
        f"{args.runs} run(s) x 2 sides x {args.seconds:g} s at {args.clients} clients: about "
        f"{args.runs * 2 * (args.seconds + 1) / 60 + 0.3:.1f} min",
        file=sys.stderr,
    )
    docnum_side = Side("docnum next_number")
    redlock_side = Side("Redis lock + FOR UPDATE")
    checks: dict[str, str] = {}
    started = time.monotonic()
    with ExitStack() as stack:
        server, where = stack.enter_context(server_dsn())
        dsn = stack.enter_context(scratch_database(server))
        settings = prepare(dsn, None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            redlock_setup(conn)
            conn.execute("VACUUM ANALYZE")
        port = stack.enter_context(redis_server(binary))
        for run in range(1, args.runs + 1):
            order = ("docnum", "redlock") if run % 2 else ("redlock", "docnum")
            for side in order:
                checkpoint(dsn)
                if side == "docnum":
                    result = run_docnum(dsn, args.clients, args.seconds)
                    checks["docnum"] = check_run(result, gapless=True)
                    docnum_side.runs.append(result)
                else:
                    result = run_redlock(dsn, port, args.clients, args.seconds)
                    checks["redlock"] = check_run(result, gapless=False)
                    redlock_side.runs.append(result)
                print(
                    f"run {run} {side}: {result.numbers_per_s:,.0f} numbers/s, p50 {result.p50_ms:.1f} ms, "
                    f"p99 {result.p99_ms:.1f} ms, {result.failures} failures, {result.starved} starved",
                    file=sys.stderr,
                )
                for error in result.errors:
                    print(f"  {side} error: {error}", file=sys.stderr)

    context = [
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {where}, PostgreSQL {settings['server_version']}, "
        f"{os.cpu_count()} CPUs, fsync={settings['fsync']}, "
        f"synchronous_commit={settings['synchronous_commit']}",
        f"{args.clients} clients per side on one counter, Python threads with one prepared psycopg "
        f"connection each; {args.runs} alternating run(s) x {args.seconds:g} s per side, CHECKPOINT "
        f"before each; {(time.monotonic() - started) / 60:.1f} min",
        f"Redis lock: SET NX PX {LOCK_TTL_MS} ms, {RETRY_COUNT} retries {RETRY_DELAY_MS} +- "
        f"{RETRY_JITTER_MS} ms apart (the replaced design's settings); a request failing them is a failure",
        "numbers/s, p50, p99: medians over runs (latency of successful requests); failures: all runs; "
        f"starved: clients under {STARVED_SHARE:.0%} of an equal share or at zero, worst run",
    ]
    rows = report_rows(docnum_side, redlock_side, args.clients)
    lines = [
        f"checks, last run: docnum {checks['docnum']}; Redis-lock side {checks['redlock']}",
        verdict(docnum_side, redlock_side),
    ]
    print()
    print(render(rows))
    print()
    for line in [*context, *lines]:
        print(line)
    if args.markdown:
        args.markdown.write_text(markdown(rows, context, lines), encoding="utf-8")
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
