#!/usr/bin/env python3
"""What the HTTP layer costs: reserve + confirm over HTTP beside the same work through the Python client.

    .venv/bin/python benchmarks/http_bench.py                   # 3 runs x 5 s per cell, clients 8 and 32
    .venv/bin/python benchmarks/http_bench.py --quick           # smoke: 1 run x 2 s, 8 clients
    .venv/bin/python benchmarks/http_bench.py --clients 1 8 64 --seconds 10

The server is $DOCNUM_DSN (a superuser connection) when set, else a throwaway embedded PostgreSQL 18; the
work happens in a scratch database (run.py's helpers: created, migrated, dropped).  Both sides do the same
thing, one reservation then its confirmation, each in its own transaction, on the hot counter (one type, one
scope): the number of pairs a second is the figure, and the latency of a pair (reserve sent to confirm
answered) gives p50 and p99.

    http     ``docnum serve`` (one uvicorn process, pool of --pool-max connections), one keep-alive HTTP/1.1
             connection per client (a minimal client on asyncio streams, see Connection); every
             request verifies an HS256 JWT and runs SET LOCAL ROLE docnum_app plus request.jwt.claims, as in
             production (the pool logs in as the superuser of the scratch database here: the role switch is
             the same statement whoever switches).
    client   docnum.AsyncNumbering on a psycopg AsyncConnectionPool of the same size, in this process.

Both load generators are asyncio tasks in this process (one per client), so the Python cost of the client
side is there on both sides; the HTTP side also pays httpx and the server process.  Cells alternate between
the sides (run 1 http first, run 2 client first...) and every cell is the median of --runs runs.  On a
machine with few CPUs the load generator, the server and PostgreSQL share them: read the ratio, not the
absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
from psycopg_pool import AsyncConnectionPool

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from run import TYPE_CODE, checkpoint, percentile, prepare, scratch_database, server_dsn  # noqa: E402, I001

from docnum import AsyncNumbering  # noqa: E402

SCOPE = "P1"  # the hot counter run.py's setup creates
SECRET = "http-bench-secret-" + "x" * 32


@dataclass
class Result:
    pairs: int
    seconds: float
    latencies_us: list[int]
    failures: int

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds

    def p(self, fraction: float) -> float:
        return percentile(sorted(self.latencies_us), fraction) / 1000.0


@dataclass
class Cell:
    side: str
    clients: int
    runs: list[Result] = field(default_factory=list)

    def median(self, value: Callable[[Result], float]) -> float:
        return statistics.median(value(run) for run in self.runs)


async def drive(clients: int, seconds: float, pair: Callable[[], Awaitable[None]]) -> Result:
    """``clients`` tasks run ``pair`` back to back for ``seconds``; a pair still in flight at the end is not
    counted."""
    latencies: list[int] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal failures
        while True:
            started = time.perf_counter()
            if started >= deadline:
                return
            try:
                await pair()
            except Exception:
                failures += 1
                continue
            finished = time.perf_counter()
            if finished <= deadline:
                latencies.append(int((finished - started) * 1_000_000))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return Result(len(latencies), min(seconds, time.perf_counter() - started), latencies, failures)


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the load generator should cost little beside
    the server it measures (httpx spends several times the server's CPU per request, which on a small
    machine would measure httpx)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, token: str):
        self.reader, self.writer = reader, writer
        self.head = f"Host: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"

    async def post(self, path: str, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
        payload = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, json.loads(await self.reader.readexactly(length))


async def run_http(url: str, clients: int, seconds: float) -> Result:
    token = jwt.encode(
        {"sub": "bench", "role": "docnum_app", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256"
    )
    host, port = url.removeprefix("http://").split(":")
    connections: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(clients):
        reader, writer = await asyncio.open_connection(host, int(port))
        connections.put_nowait(Connection(reader, writer, f"{host}:{port}", token))

    async def pair() -> None:
        connection = await connections.get()  # one connection per client task: never waits
        try:
            status, reserved = await connection.post(
                "/document-numbering/reserve", {"document_type": TYPE_CODE, "scope_value": SCOPE}
            )
            if status != 201:
                raise RuntimeError(reserved)
            status, confirmed = await connection.post(
                "/document-numbering/confirm", {"token": reserved["data"]["token"]}
            )
            if status != 200:
                raise RuntimeError(confirmed)
        finally:
            connections.put_nowait(connection)

    try:
        return await drive(clients, seconds, pair)
    finally:
        while not connections.empty():
            connections.get_nowait().writer.close()


async def run_client(dsn: str, clients: int, seconds: float) -> Result:
    async with AsyncConnectionPool(
        dsn, min_size=clients, max_size=clients, open=False, kwargs={"prepare_threshold": None}
    ) as pool:
        await pool.wait()
        numbering = AsyncNumbering(pool)

        async def pair() -> None:
            reservation = await numbering.reserve(TYPE_CODE, scope=SCOPE, actor="bench")
            await numbering.confirm(reservation.token, actor="bench")

        return await drive(clients, seconds, pair)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(dsn: str, pool_max: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DOCNUM_DSN": dsn, "DOCNUM_JWT_SECRET": SECRET}
    command = [
        sys.executable, "-m", "docnum", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--rate-limit", "0", "--pool-min", str(pool_max), "--pool-max", str(pool_max),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"docnum serve exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("docnum serve did not start within 30 s")


def check_gapless(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT l.sequence_value), min(l.sequence_value), max(l.sequence_value),"
            " count(*) FILTER (WHERE l.state = 'confirmed')"
            " FROM docnum.ledger l JOIN docnum.counter c USING (counter_id)"
            " WHERE l.document_type = %s AND c.scope_value = %s",
            (TYPE_CODE, SCOPE),
        ).fetchone()
    assert row is not None
    total, distinct, low, high, confirmed = row
    ok = total == distinct == high - low + 1
    return (
        f"{'ok' if ok else 'FAILED'}: {total:,} numbers on the hot counter, {distinct:,} distinct,"
        f" {low}..{high}, {confirmed:,} confirmed"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--pool-max", type=int, default=20, help="Connections of the server and of the client."
    )
    parser.add_argument("--quick", action="store_true", help="1 run x 2 s at 8 clients.")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.runs = [8], 2.0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cells = {(side, c): Cell(side, c) for c in args.clients for side in ("http", "client")}
    with ExitStack() as stack:
        server, where = stack.enter_context(server_dsn())
        dsn = stack.enter_context(scratch_database(server))
        prepare(dsn, None)
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"docnum-http-bench-{os.getpid()}.log"
        process, url = start_server(dsn, args.pool_max, log)
        stack.callback(process.wait, 10)
        stack.callback(process.terminate)
        print(f"server: {where}; docnum serve at {url} (pool {args.pool_max})", file=sys.stderr)
        for run in range(1, args.runs + 1):
            for clients in args.clients:
                order = ("http", "client") if run % 2 else ("client", "http")
                for side in order:
                    checkpoint(dsn)
                    pool_clients = min(clients, args.pool_max)
                    result = asyncio.run(
                        run_http(url, clients, args.seconds)
                        if side == "http"
                        else run_client(dsn, pool_clients, args.seconds)
                        if clients <= args.pool_max
                        else run_client_limited(dsn, clients, args.pool_max, args.seconds)
                    )
                    cells[(side, clients)].runs.append(result)
                    print(
                        f"run {run} {side:6} {clients:3} clients: {result.pairs_per_s:8,.0f} pairs/s,"
                        f" p50 {result.p(0.5):6.2f} ms, p99 {result.p(0.99):6.2f} ms,"
                        f" {result.failures} failures",
                        file=sys.stderr,
                    )
        verdict = check_gapless(dsn)
    print()
    print(f"reserve + confirm, hot counter, median of {args.runs} run(s) x {args.seconds:g} s; {where}")
    print(
        f"{'clients':>7}  {'side':6}  {'pairs/s':>9}  {'requests/s':>10}  {'p50 ms':>7}  {'p99 ms':>7}  ratio"
    )
    for clients in args.clients:
        client_rate = cells[("client", clients)].median(lambda r: r.pairs_per_s)
        for side in ("client", "http"):
            cell = cells[(side, clients)]
            rate = cell.median(lambda r: r.pairs_per_s)
            ratio = f"{rate / client_rate:5.2f}" if side == "http" else "     "
            p50, p99 = cell.median(lambda r: r.p(0.5)), cell.median(lambda r: r.p(0.99))
            figures = f"{rate:>9,.0f}  {2 * rate:>10,.0f}  {p50:>7.2f}  {p99:>7.2f}"
            print(f"{clients:>7}  {side:6}  {figures}  {ratio}")
    print(f"gapless check: {verdict}")
    failures = sum(run.failures for cell in cells.values() for run in cell.runs)
    if failures:
        print(f"{failures} failed pairs (see the server log {log})")
    return 0 if verdict.startswith("ok") and not failures else 1


async def run_client_limited(dsn: str, clients: int, pool_max: int, seconds: float) -> Result:
    """More clients than connections: the pool queues them, as the server's pool queues requests."""
    async with AsyncConnectionPool(
        dsn, min_size=pool_max, max_size=pool_max, open=False, kwargs={"prepare_threshold": None}
    ) as pool:
        await pool.wait()
        numbering = AsyncNumbering(pool)

        async def pair() -> None:
            reservation = await numbering.reserve(TYPE_CODE, scope=SCOPE, actor="bench")
            await numbering.confirm(reservation.token, actor="bench")

        return await drive(clients, seconds, pair)


if __name__ == "__main__":
    raise SystemExit(main())
