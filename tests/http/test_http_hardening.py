"""The HTTP API under a hostile client, through real ``docnum serve`` processes: stalled and abandoned
exports, bodies and heads past their limits, formulas in CSV cells, input PostgreSQL cannot store, reused
Idempotency-Keys, the rate limit, a database that drops its connections, and an exhausted pool.

Raw sockets stand in for the clients httpx would never be (one that stops reading, one that sends 64 MB of
header); everything a test waits for is a state it polls (pg_stat_activity, the server log), never a sleep.
"""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from docnum.interchange.exports import AUDIT_EXPORT_COLUMNS, ExportEncoder, ExportFormat
from docnum.models import AuditEntry
from support.http_server import HttpDatabase, Server, bearer, start_server, stop_server, token

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

APP = bearer("docnum_app", "app-user")
READER = bearer("docnum_reader", "auditor")
ADMIN = bearer("docnum_admin", "admin-1")
PREFIX = "/document-numbering"
WINDOW = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
#: What a spreadsheet takes for the start of a formula (OWASP, "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(http_database: HttpDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with http_database.connect(autocommit=True) as conn:
        for code, fmt, settings in [
            ("COR", "COR-{SEQ:6}", ""),
            ("PRJ", "{SCOPE}/PRJ/{SEQ:4}", ", scope => 'PROJECT'"),
            ("BULK", "B-{SEQ:6}", ""),
            ("HELD", "H-{SEQ:4}", ", lock_timeout => '20 s'"),
        ]:
            conn.execute(f"SELECT docnum.define_type(code => '{code}', format => '{fmt}'{settings})")
    log = tmp_path_factory.mktemp("http") / "server.log"
    running = start_server(
        http_database.login_dsn,
        log,
        "--rate-limit",
        "0",
        "--access-log",  # the access log must stay printable too
        "--export-send-timeout",
        "6",
    )
    yield running
    output = stop_server(running)
    assert "\x00" not in output and "\ud800" not in output


@pytest.fixture
def sql(http_database: HttpDatabase) -> Iterator[psycopg.Connection[Any]]:
    with http_database.connect(autocommit=True) as conn:
        yield conn


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def footprint(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM docnum.ledger), (SELECT count(*) FROM docnum.audit_log),"
        " (SELECT count(*) FROM docnum.document_type)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting, after {timeout} s, for {what}")
        time.sleep(0.05)


def assert_quiet(log: str) -> None:
    """Nothing in the server's log but INFO and WARNING lines, all of them printable."""
    assert "Traceback" not in log and "\x00" not in log, log[-3000:]
    assert not re.search(r"^(ERROR|CRITICAL)", log, re.MULTILINE), log[-3000:]


def export_backends(conn: psycopg.Connection[Any]) -> int:
    """The server's connections inside a transaction (what a stalled export would hold)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'docnum-http'"
        " AND state IN ('idle in transaction', 'active') AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- stalled and abandoned exports --------------------------------------------------------------------------


def _export_request(fmt: str = "csv") -> bytes:
    return (
        f"GET {PREFIX}/audit-export?from={WINDOW['from']}&to={WINDOW['to']}&format={fmt} HTTP/1.1\r\n"
        f"Host: test\r\nAuthorization: Bearer {token('docnum_reader', 'auditor')}\r\n\r\n"
    ).encode()


def _open_stalled_export(port: int, take: int = 64 * 1024) -> tuple[socket.socket, int]:
    """An export whose client reads ``take`` bytes and then nothing more (its receive window kept small)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(15)
    sock.connect(("127.0.0.1", port))
    sock.sendall(_export_request())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1])
    while status == 200 and len(data) < take:
        chunk = sock.recv(min(65536, take - len(data)))
        if not chunk:
            break
        data += chunk
    return sock, status


@pytest.fixture(scope="module")
def bulky(server: Server, http_database: HttpDatabase) -> None:
    """An audit trail of about 20 MB as CSV: far more than the socket buffers of a stalled client hold."""
    with http_database.connect(autocommit=True) as conn:
        metadata = json.dumps({"note": "n" * 8000})
        for _ in range(25):
            conn.execute(
                "SELECT count(*) FROM docnum.reserve_numbers('BULK', 100, metadata => %s)", [metadata]
            )


def test_stalled_exports_hold_a_bounded_share_of_the_pool_for_a_bounded_time(
    server: Server, bulky: None, sql: psycopg.Connection[Any]
) -> None:
    assert export_backends(sql) == 0
    port = port_of(server)
    with ThreadPoolExecutor(25) as pool:  # all at once, well inside the send timeout (6 s)
        opened = list(pool.map(lambda _: _open_stalled_export(port), range(25)))
    statuses = [status for _, status in opened]
    try:
        # a quarter of the pool (20) streams; the rest are told to come back
        assert statuses.count(200) == 5 and statuses.count(503) == 20, statuses
        assert export_backends(sql) == 5
        with httpx.Client(base_url=server.url, timeout=3) as http:
            for _ in range(10):  # allocation answers, within 3 s each, while the exports stall
                assert (
                    http.post(f"{PREFIX}/next", json={"document_type": "COR"}, headers=APP).status_code == 201
                )
            ready = http.get("/readyz")
            checks = ready.json()["checks"]
            assert ready.status_code == 200, ready.text
            assert checks["database"]["ok"] and "5 by audit exports" in checks["pool"]["detail"]
        # the send timeout (6 s) stops every stalled export and gives its connection back
        wait_for(lambda: export_backends(sql) == 0, "the stalled exports to end")
        wait_for(lambda: server.output().count("audit export stopped") == 5, "one INFO line per export")
        for sock, status in opened:
            if status == 200:  # the client sees a cut body, never a complete-looking one
                rest = _drain(sock)
                assert not rest.endswith(b"0\r\n\r\n")
    finally:
        for sock, _ in opened:
            sock.close()
    assert_quiet(server.output())


def _drain(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except OSError:
        pass
    return data


def test_a_client_hanging_up_is_one_info_line(
    server: Server, bulky: None, sql: psycopg.Connection[Any]
) -> None:
    before = server.output().count("client hung up")
    sock, status = _open_stalled_export(port_of(server))
    assert status == 200
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    sock.close()
    wait_for(lambda: export_backends(sql) == 0, "the abandoned export to end")
    wait_for(lambda: server.output().count("client hung up") == before + 1, "one line for the hang-up")
    assert_quiet(server.output())


def test_readiness_says_the_pool_is_exhausted_not_the_database_down(
    server: Server, http_database: HttpDatabase, tmp_path: Path, sql: psycopg.Connection[Any]
) -> None:
    small = start_server(
        http_database.login_dsn,
        tmp_path / "small.log",
        "--rate-limit",
        "0",
        "--pool-min",
        "1",
        "--pool-max",
        "2",
    )
    try:
        sql.execute("SELECT docnum.next_number('HELD')")  # its counter exists
        with ThreadPoolExecutor(3) as pool, httpx.Client(base_url=small.url, timeout=30) as http:
            with sql.transaction():
                # HELD's turn is taken: its allocations wait, each holding one of the two pooled connections,
                # and the third waits for a connection
                sql.execute("SELECT FROM docnum.counter_queue WHERE document_type = 'HELD' FOR UPDATE")
                waiting = [
                    pool.submit(http.post, f"{PREFIX}/next", json={"document_type": "HELD"}, headers=APP)
                    for _ in range(3)
                ]
                with http_database.connect(
                    autocommit=True
                ) as observer:  # (a transaction's view stands still)
                    wait_for(lambda: _waiting(observer) == 2, "two allocations to wait for the turn")
                wait_for(
                    lambda: not http.get("/readyz").json()["checks"]["pool"]["ok"], "the pool seen exhausted"
                )
                answer = http.get("/readyz")
                assert answer.status_code == 503
                checks = answer.json()["checks"]
                assert checks["database"] == {"ok": True}
                assert "2 of 2 connections in use" in checks["pool"]["detail"]
                assert "1 requests waiting" in checks["pool"]["detail"]
            # the turn is free again: the two allocations end, and the third did or got 503 after its 5 s
            statuses = [future.result().status_code for future in waiting]
        assert statuses.count(201) >= 2 and set(statuses) <= {201, 503}
    finally:
        stop_server(small)


def _waiting(conn: psycopg.Connection[Any]) -> int:
    """The server's connections waiting for a lock (for the holder's, or in the queue behind it)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'docnum-http' AND cardinality(pg_blocking_pids(pid)) > 0"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_pool_survives_its_connections_being_terminated(
    server: Server, sql: psycopg.Connection[Any]
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post(f"{PREFIX}/next", json={"document_type": "COR"}, headers=APP).status_code == 201
        ended = sql.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'docnum-http'"
        ).fetchone()
        assert ended is not None and ended[0] >= 1
        answers = [
            http.post(f"{PREFIX}/next", json={"document_type": "COR"}, headers=APP).status_code
            for _ in range(20)
        ]
        assert answers == [201] * 20


# -- sizes before bodies: 401, 413, 431 ---------------------------------------------------------------------


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _send_big(port: int, head: bytes, size: int, *, chunked: bool = False) -> tuple[int, dict[str, str], int]:
    """Send ``head`` and then up to ``size`` bytes (chunked or not) while reading the answer; return its
    status, its headers and how much of the body the server took before it stopped the client."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0

    def pump() -> None:
        nonlocal sent
        piece = b"x" * 65536
        framed = b"10000\r\n" + piece + b"\r\n" if chunked else piece
        try:
            sock.sendall(head)
            while sent < size:
                sock.sendall(framed)
                sent += len(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass

    sender = threading.Thread(target=pump)
    sender.start()
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except OSError:
        pass
    sender.join(60)
    sock.close()
    assert answer, "no answer"
    status_line, *header_lines = answer.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, sent


def _post_head(*, length: int | None, auth: bool) -> bytes:
    lines = [f"POST {PREFIX}/reserve HTTP/1.1", "Host: test", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if auth:
        lines.append(f"Authorization: Bearer {token('docnum_app', 'big')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_bodies_and_heads_past_their_limits_are_refused_before_they_are_read(
    server: Server, sql: psycopg.Connection[Any]
) -> None:
    pid, port, size = server.process.pid, port_of(server), 50 * MB
    before, written = _rss(pid), footprint(sql)
    # no token: 401 on the head, whatever the body; the server reads none of it and closes
    for length in (size, None):
        status, headers, taken = _send_big(
            port, _post_head(length=length, auth=False), size, chunked=length is None
        )
        assert status == 401 and headers.get("connection") == "close"
        assert taken < size
    # a token, and a body over 1 MiB: 413, declared (before a byte is read) or streamed (when it passes 1 MiB)
    for length in (size, None):
        status, headers, taken = _send_big(
            port, _post_head(length=length, auth=True), size, chunked=length is None
        )
        assert status == 413 and headers.get("connection") == "close"
        assert taken < size
    # a 64 MB header: 431 once 16 KiB of head arrived
    status, _, taken = _send_big(port, b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Filler: ", 64 * MB)
    assert status == 431 and taken < 64 * MB
    assert _rss(pid) - before < 100 * MB
    assert footprint(sql) == written
    with httpx.Client(base_url=server.url) as http:  # and the server serves on
        assert http.get("/healthz").status_code == 200


# -- CSV cells that are no formulas -----------------------------------------------------------------------

HOSTILE = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "'=quoted", '=HYPERLINK("http://x")']


def _unescaped(cell: str) -> str:
    """How an auditor reads a neutralised cell back (docs/sql-api.md): drop a leading '."""
    return cell[1:] if cell.startswith("'") else cell


def _check_csv(text: str, jsonl: str) -> None:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(AUDIT_EXPORT_COLUMNS)
    exact = [json.loads(line) for line in jsonl.splitlines()]
    assert len(rows) - 1 == len(exact)
    for cells, record in zip(rows[1:], exact, strict=True):
        for name, cell in zip(AUDIT_EXPORT_COLUMNS, cells, strict=True):
            assert not cell.startswith(FORMULA_START), (name, cell)
            value = record[name]
            if isinstance(value, str) and name not in ("occurred_at",):
                assert _unescaped(cell) == value, (name, cell, value)
    found = {record["scope_value"] for record in exact} | {record["actor"] for record in exact}
    assert set(HOSTILE) <= found  # the JSON Lines keep every value exactly


def test_csv_exports_neutralise_formulas_over_http_and_in_the_cli(
    server: Server, http_database: HttpDatabase, tmp_path: Path
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for text in HOSTILE:
            sent = http.post(
                f"{PREFIX}/next",
                json={"document_type": "PRJ", "scope_value": text, "document_ref": text},
                headers=bearer("docnum_app", text),
            )
            assert sent.status_code == 201, sent.text
        window = {**WINDOW, "document_type": "PRJ"}
        as_csv = http.get(f"{PREFIX}/audit-export", params={**window, "format": "csv"}, headers=READER)
        as_jsonl = http.get(f"{PREFIX}/audit-export", params={**window, "format": "jsonl"}, headers=READER)
    assert as_csv.status_code == 200 and as_jsonl.status_code == 200
    _check_csv(as_csv.text, as_jsonl.text)

    cli = [sys.executable, "-m", "docnum", "--dsn", http_database.superuser_dsn, "audit-export"]
    span = ["--start", "2000-01-01", "--end", "2100-01-01", "--type", "PRJ"]
    for fmt in ("csv", "jsonl"):
        done = subprocess.run(
            [*cli, *span, "--format", fmt, "-o", str(tmp_path / f"x.{fmt}")], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    _check_csv((tmp_path / "x.csv").read_text(), (tmp_path / "x.jsonl").read_text())


_AUDIT_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@given(actor=_AUDIT_TEXT, scope=_AUDIT_TEXT, number=_AUDIT_TEXT)
def test_a_csv_cell_never_starts_a_formula_and_reads_back(actor: str, scope: str, number: str) -> None:
    entry = AuditEntry(
        1, _NOW, "ISSUE", "COR", number, scope, actor, "app", None, None, None, {"k": actor}, None
    )
    (cells,) = list(csv.reader(io.StringIO(ExportEncoder(ExportFormat.csv).rows([entry]), newline="")))
    by_name = dict(zip(AUDIT_EXPORT_COLUMNS, cells, strict=True))
    for name, value in [("actor", actor), ("scope_value", scope), ("document_number", number)]:
        assert not by_name[name].startswith(FORMULA_START)
        assert _unescaped(by_name[name]) == value
    assert json.loads(_unescaped(by_name["new_value"])) == {"k": actor}
    (line, end) = ExportEncoder(ExportFormat.jsonl).rows([entry]).split("\n")  # one line, whatever it holds
    assert end == ""
    assert json.loads(line)["actor"] == actor


_NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


# -- input PostgreSQL cannot store, and input past docnum's limits ----------------------------------------

NUL, SURROGATE = "\x00", "\\ud800"

#: (method, path, headers, body as bytes or JSON, the field the answer must name)
BAD_INPUTS: list[tuple[str, str, dict[str, str], Any, str]] = [
    ("POST", "/reserve", APP, {"document_type": f"CO{NUL}R"}, "document_type"),
    ("POST", "/reserve", APP, {"document_type": "PRJ", "scope_value": f"P{NUL}"}, "scope_value"),
    ("POST", "/reserve", APP, {"document_type": "COR", "metadata": {"k": f"v{NUL}"}}, "metadata"),
    ("POST", "/reserve", APP, {"document_type": "COR", "metadata": {f"k{NUL}": 1}}, "metadata"),
    ("POST", "/next", APP, {"document_type": "COR", "document_ref": f"r{NUL}"}, "document_ref"),
    ("POST", "/cancel", APP, {"token": str(uuid.uuid4()), "reason": f"r{NUL}"}, "reason"),
    ("POST", "/confirm", APP, {"token": f"{uuid.uuid4()}{NUL}"}, "token"),
    ("POST", "/void", ADMIN, {"document_number": "COR-000001", "reason": f"x{NUL}"}, "reason"),
    ("POST", "/types", ADMIN, {"code": "NUL", "format": f"N-{NUL}{{SEQ:3}}"}, "format"),
    ("GET", "/types/C%00R", ADMIN, None, "code"),
    ("GET", "/status?document_type=C%00R", READER, None, "document_type"),
    ("GET", "/history?document_number=C%00R", READER, None, "document_number"),
    ("GET", "/gaps?scope_value=%00", READER, None, "scope_value"),
    ("GET", "/requests/k%00", APP, None, "idempotency_key"),
    ("POST", "/reserve", APP, f'{{"document_type": "{SURROGATE}"}}'.encode(), "document_type"),
    (
        "POST",
        "/reserve",
        APP,
        f'{{"document_type": "COR", "metadata": {{"{SURROGATE}": 1}}}}'.encode(),
        "metadata",
    ),
    ("POST", "/reserve", APP, b'{"document_type": "COR", "metadata": {"x": Infinity}}', "metadata"),
    ("POST", "/reserve", APP, b'{"document_type": "COR", "metadata": {"x": 1e400}}', "metadata"),
    ("POST", "/reserve", APP, b'{"document_type": "COR", "metadata": {"x": NaN}}', "metadata"),
    ("POST", "/reserve", APP, {"document_type": "COR", "metadata": {"x": "y" * 9000}}, "metadata"),
    ("POST", "/reserve", APP, {"document_type": "COR", "ttl_seconds": 10**20}, "ttl_seconds"),
    ("POST", "/reserve", APP, {"document_type": "COR", "ttl_seconds": 2**31 - 1}, "ttl"),
    ("POST", "/reserve", APP, {"document_type": "COR", "ttl_seconds": -1}, "ttl_seconds"),
    ("POST", "/next-batch", APP, {"document_type": "COR", "count": 10**30}, "count"),
    ("POST", "/reserve-batch", APP, {"document_type": "COR", "count": 2**70}, "count"),
    (
        "POST",
        "/reserve-batch",
        APP,
        {"document_type": "COR", "count": 200, "metadata": {"x": "y" * 8000}},
        "metadata",
    ),
    ("POST", "/set-counter", ADMIN, {"document_type": "COR", "value": 2**63, "reason": "r"}, "value"),
    ("POST", "/types", ADMIN, {"code": "BIG", "format": "B-{SEQ:3}", "max_value": 2**64}, "max_value"),
    (
        "POST",
        "/types",
        ADMIN,
        {"code": "BIG", "format": "B-{SEQ:3}", "reservation_ttl_seconds": 2**40},
        "reservation_ttl_seconds",
    ),
    (
        "POST",
        "/types",
        ADMIN,
        {"code": "BIG", "format": "B-{SEQ:3}", "lock_timeout_ms": 2**40},
        "lock_timeout_ms",
    ),
    ("PATCH", "/types/COR", ADMIN, {"reservation_ttl_seconds": 2**40}, "reservation_ttl_seconds"),
    ("PATCH", "/types/COR", ADMIN, {"metadata": {"x": "y" * 9000}}, "metadata"),
    ("POST", "/import", ADMIN, b"[" * 100_000 + b"]" * 100_000, "body"),
    (
        "POST",
        "/reserve",
        APP,
        b'{"document_type": "COR", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "body",
    ),
    (
        "POST",
        "/import",
        {**ADMIN, "Content-Type": "text/csv"},
        b"document_type,document_number\nCOR," + b"x" * 140_000 + b"\n",
        "line 2",
    ),
    (
        "POST",
        "/import",
        {**ADMIN, "Content-Type": "text/csv"},
        b"document_type,document_number,document_ref\nCOR,COR-000009,a\x00b\n",
        "document_ref",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "field"),
    BAD_INPUTS,
    ids=[f"{method} {path[:30]} {field}" for method, path, _, _, field in BAD_INPUTS],
)
def test_every_bad_input_is_a_4xx_naming_its_field_and_changes_nothing(
    server: Server,
    sql: psycopg.Connection[Any],
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    field: str,
) -> None:
    before = footprint(sql)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        request = http.build_request(
            method,
            PREFIX + path,
            headers={"Content-Type": "application/json", **headers},
            **({"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}),
        )
        answer = http.send(request)
    assert 400 <= answer.status_code < 500, answer.text[:500]
    assert answer.headers["content-type"] == "application/problem+json"
    assert field in answer.text, answer.text[:500]
    assert "Traceback" not in answer.text and "\x00" not in answer.text
    assert footprint(sql) == before
    assert_quiet(server.output())


# -- the rest of the request's meaning -------------------------------------------------------------------


def test_a_reused_idempotency_key_with_another_body_is_nb012(
    server: Server, sql: psycopg.Connection[Any]
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"document_type": "COR", "metadata": {"a": 1}, "ttl_seconds": 600}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        first = http.post(f"{PREFIX}/reserve", json=body, headers={**APP, **key})
        assert first.status_code == 201
        again = http.post(f"{PREFIX}/reserve", json={**body, "metadata": {"a": 1}}, headers={**APP, **key})
        assert again.json()["data"] == first.json()["data"]  # exactly what was stored
        for changed in ({"metadata": {"a": 2}}, {"ttl_seconds": 60}, {"metadata": None}):
            refused = http.post(f"{PREFIX}/reserve", json={**body, **changed}, headers={**APP, **key})
            assert refused.status_code == 422 and refused.json()["code"] == "NB012", refused.text
        key = {"Idempotency-Key": str(uuid.uuid4())}
        issued = http.post(
            f"{PREFIX}/next", json={"document_type": "COR", "document_ref": "a"}, headers={**APP, **key}
        )
        assert issued.status_code == 201
        refused = http.post(
            f"{PREFIX}/next", json={"document_type": "COR", "document_ref": "b"}, headers={**APP, **key}
        )
        assert refused.status_code == 422 and refused.json()["code"] == "NB012"
        row = sql.execute(
            "SELECT metadata FROM docnum.ledger WHERE document_number = %s",
            [first.json()["data"]["document_number"]],
        ).fetchone()
        assert row == ({"a": 1},)


def test_only_requests_that_reach_the_database_spend_the_rate_limit(
    http_database: HttpDatabase, tmp_path: Path
) -> None:
    limited = start_server(http_database.login_dsn, tmp_path / "limited.log", "--rate-limit", "5")
    alice = bearer("docnum_app", "alice-rate")
    try:
        with httpx.Client(base_url=limited.url, timeout=30) as http:
            for body in (
                {"document_type": "COR", "count": 10**30},
                {"document_type": f"C{NUL}R"},
                {"document_type": "COR", "metadata": "not an object"},
            ):
                for _ in range(40):
                    path = "/next-batch" if "count" in body else "/reserve"
                    assert http.post(PREFIX + path, json=body, headers=alice).status_code == 422
            for _ in range(5):
                assert (
                    http.post(f"{PREFIX}/next", json={"document_type": "COR"}, headers=alice).status_code
                    == 201
                )
            assert (
                http.post(f"{PREFIX}/next", json={"document_type": "COR"}, headers=alice).status_code == 429
            )
    finally:
        stop_server(limited)


@pytest.mark.parametrize("path", ["/status", "/gaps", "/audit-export"])
def test_an_unknown_type_in_a_report_is_404_nb001(server: Server, path: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = http.get(PREFIX + path, params={"document_type": "XYZ", **WINDOW}, headers=READER)
    assert answer.status_code == 404 and answer.json()["code"] == "NB001", answer.text
