"""Administration, reports, import, the streamed audit export, health and the OpenAPI document of the HTTP
API, through a real ``docnum serve`` process."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from support.http_server import HttpDatabase, Server, bearer, start_server, stop_server

APP = bearer("docnum_app", "app-user")
READER = bearer("docnum_reader", "auditor")
ADMIN = bearer("docnum_admin", "admin-1")


@pytest.fixture(scope="module")
def server(http_database: HttpDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with http_database.connect(autocommit=True) as conn:
        conn.execute(
            "SELECT docnum.define_type(code => 'RFA', format => '{SCOPE}/RFA/{SEQ:4}', scope => 'PROJECT',"
            " allow_manual_override => true)"
        )
        conn.execute("SELECT docnum.define_type(code => 'COR', format => 'COR-{SEQ:4}')")
        conn.execute("SELECT docnum.define_type(code => 'EXP', format => 'E-{SEQ:4}')")
        conn.execute("SELECT docnum.define_type(code => 'LEG', format => 'LEG-{SEQ:4}')")
    running = start_server(http_database.login_dsn, tmp_path_factory.mktemp("http") / "server.log")
    yield running
    stop_server(running)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def sql(http_database: HttpDatabase) -> Iterator[psycopg.Connection[Any]]:
    with http_database.connect(autocommit=True) as conn:
        yield conn


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


def test_override_void_replace_set_counter_gaps_history(
    http: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    base = "/document-numbering"
    first = ok(
        http.post(f"{base}/next", json={"document_type": "RFA", "scope_value": "P1"}, headers=APP), 201
    )
    assert first["document_number"] == "P1/RFA/0001"

    manual = {"document_type": "RFA", "document_number": "P1/RFA/0005", "reason": "paper register"}
    assert (
        ok(http.post(f"{base}/manual", json=manual, headers=ADMIN), 201)["document_number"] == "P1/RFA/0005"
    )

    replaced = ok(
        http.post(
            f"{base}/void-and-replace",
            json={"document_number": "P1/RFA/0001", "reason": "typo"},
            headers=ADMIN,
        ),
        201,
    )
    assert replaced == {"voided_number": "P1/RFA/0001", "document_number": "P1/RFA/0006"}

    voided = ok(
        http.post(
            f"{base}/void", json={"document_number": "P1/RFA/0006", "reason": "withdrawn"}, headers=ADMIN
        )
    )
    assert voided == {"document_number": "P1/RFA/0006"}

    counter = ok(
        http.post(
            f"{base}/set-counter",
            json={"document_type": "RFA", "scope_value": "P1", "value": 10, "reason": "skip ahead"},
            headers=ADMIN,
        )
    )
    assert counter["value"] == 10

    gaps = ok(http.get(f"{base}/gaps", params={"document_type": "RFA", "scope_value": "P1"}, headers=READER))
    assert [(g["first_value"], g["last_value"], g["explained"]) for g in gaps] == [
        (2, 4, True),
        (7, 10, True),
    ]

    history = ok(http.get(f"{base}/history", params={"document_number": "P1/RFA/0001"}, headers=APP))
    assert {entry["document_number"] for entry in history} == {"P1/RFA/0001", "P1/RFA/0006"}
    assert {entry["actor"] for entry in history} == {"app-user", "admin-1"}

    status = ok(http.get(f"{base}/status", params={"document_type": "RFA"}, headers=READER))
    assert len(status) == 1 and status[0]["current_value"] == 10 and status[0]["voided"] == 2

    actors = dict(
        sql.execute("SELECT document_number, actor FROM docnum.ledger WHERE document_type = 'RFA'").fetchall()
    )
    assert actors["P1/RFA/0005"] == "admin-1" and actors["P1/RFA/0001"] == "app-user"


def test_validate_duplicates_and_expire(http: httpx.Client) -> None:
    base = "/document-numbering"
    report = ok(http.get(f"{base}/validate", headers=READER))
    assert report["healthy"] is True
    assert ok(http.get(f"{base}/duplicates", headers=READER)) == []

    ok(http.post(f"{base}/reserve", json={"document_type": "EXP", "ttl_seconds": 1}, headers=APP), 201)
    deadline = time.monotonic() + 5
    expired = 0
    while expired == 0 and time.monotonic() < deadline:  # the reservation lasts one second
        expired = ok(http.post(f"{base}/expire", headers=APP))["expired"]
        time.sleep(0.2)
    assert expired == 1


def test_import_json_and_csv_with_a_report_per_row(http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    url = "/document-numbering/import"
    rows = [
        {"document_type": "LEG", "document_number": "LEG-0001", "created_at": "2019-01-05"},
        {"document_type": "LEG", "document_number": "bad-number"},
    ]
    report = ok(http.post(url, json={"rows": rows}, headers=ADMIN))
    assert (report["imported"], report["already_present"], report["rejected"]) == (1, 0, 1)
    assert [r["status"] for r in report["rows"]] == ["imported", "rejected"]
    assert report["rows"][1]["detail"]

    body = (
        'Document_Type,document_number,document_ref\nLEG,LEG-0001,\n\nLEG,LEG-0002,"ref, with comma"\n'
        "LEG,nope,\n"
    )
    report = ok(http.post(url, content=body.encode(), headers={**ADMIN, "content-type": "text/csv"}))
    assert [(r["line"], r["status"]) for r in report["rows"]] == [
        (2, "already_present"),
        (4, "imported"),
        (5, "rejected"),
    ]
    ref = sql.execute(
        "SELECT document_ref, actor FROM docnum.ledger WHERE document_number = 'LEG-0002'"
    ).fetchone()
    assert ref == ("ref, with comma", "admin-1")

    # a bare array works too; docnum_app may not import; a CSV without the columns is refused
    assert (
        ok(http.post(url, json=[{"document_type": "LEG", "document_number": "LEG-0003"}], headers=ADMIN))[
            "imported"
        ]
        == 1
    )
    assert http.post(url, json={"rows": []}, headers=APP).status_code == 403
    bad = http.post(url, content=b"number\nLEG-0009\n", headers={**ADMIN, "content-type": "text/csv"})
    assert bad.status_code == 422 and "document_type" in bad.json()["detail"]
    assert http.post(url, content=b"x", headers={**ADMIN, "content-type": "text/plain"}).status_code == 415


def test_audit_export_streams_jsonl_and_csv(http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    for _ in range(3):
        ok(http.post("/document-numbering/next", json={"document_type": "COR"}, headers=APP), 201)
    expected = sql.execute("SELECT count(*) FROM docnum.audit_trail").fetchone()
    window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}

    with http.stream("GET", "/document-numbering/audit-export", params=window, headers=READER) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert "content-length" not in response.headers  # streamed (chunked), not built in memory
        lines = [json.loads(line) for line in response.iter_lines() if line]
    ids = [line["audit_id"] for line in lines]
    assert ids == sorted(ids) and len(ids) >= 3
    assert expected is not None and len(ids) == expected[0]
    assert {"operation", "document_number", "actor", "occurred_at"} <= set(lines[0])

    response = http.get(
        "/document-numbering/audit-export",
        params={**window, "format": "csv", "document_type": "COR"},
        headers=READER,
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert {row["document_type"] for row in table} == {"COR"}
    assert [row["operation"] for row in table] == ["DEFINE_TYPE", "NEXT", "NEXT", "NEXT"]
    assert [row["actor"] for row in table][1:] == ["app-user"] * 3

    empty = http.get(
        "/document-numbering/audit-export",
        params={"from": "2000-01-01", "to": "2000-01-02", "format": "csv"},
        headers=READER,
    )
    assert empty.status_code == 200 and empty.text.startswith("audit_id,")
    assert (
        http.get(
            "/document-numbering/audit-export", params={"from": "2000-01-01"}, headers=READER
        ).status_code
        == 422
    )


def test_health_readiness_and_openapi(http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["migrations"]["ok"] and checks["primary"]["ok"] and checks["database"]["ok"]
    # docnum.doctor()'s findings, as docnum_reader, without validate(): listed, never a reason to be unready
    assert checks["doctor"]["ok"] is True and "not run" not in checks["doctor"]["detail"]

    # migrations behind head: not ready (once the answer of the last second is out of date)
    (current,) = sql.execute("SELECT version_num FROM public.alembic_version").fetchone() or ("",)
    sql.execute("UPDATE public.alembic_version SET version_num = 'behind'")
    try:
        deadline = time.monotonic() + 10
        while (behind := http.get("/readyz")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert behind.status_code == 503 and behind.json()["checks"]["migrations"]["ok"] is False
    finally:
        sql.execute("UPDATE public.alembic_version SET version_num = %s", (current,))

    spec = http.get("/openapi.json").json()
    paths = set(spec["paths"])
    for path in [
        "reserve",
        "confirm",
        "cancel",
        "next",
        "expire",
        "status",
        "history",
        "gaps",
        "validate",
        "manual",
        "void",
        "void-and-replace",
        "set-counter",
        "import",
        "audit-export",
    ]:
        assert f"/document-numbering/{path}" in paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert http.get("/docs").status_code == 200


def test_an_abandoned_export_gives_its_connection_back(
    server: Server, http: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    sql.execute("SELECT docnum.next_numbers(document_type => 'COR', count => 3000)")
    window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    for _ in range(25):  # more than the pool's 20 connections: a leaked one would show
        with (
            httpx.Client(base_url=server.url, timeout=30) as reader,
            reader.stream("GET", "/document-numbering/audit-export", params=window, headers=READER) as r,
        ):
            assert r.status_code == 200
            next(r.iter_bytes())  # the first chunk, then hang up
    assert http.get("/document-numbering/status", headers=READER).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # every export's transaction ends (the server notices the hang-up)
        row = sql.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'docnum-http'"
            " AND state <> 'idle' AND pid <> pg_backend_pid()"
        ).fetchone()
        if row == (0,):
            break
        time.sleep(0.1)
    assert row == (0,)


def test_types_define_alter_get_and_nb010(http: httpx.Client) -> None:
    base = "/document-numbering/types"
    body = {"code": "INV", "format": "INV-{YYYY}-{SEQ:4}", "reset": "YEARLY", "reservation_ttl_seconds": 120}
    defined = ok(http.post(base, json=body, headers=ADMIN), 201)
    assert defined["code"] == "INV" and defined["reset"] == "YEARLY" and defined["reservation_ttl"] == 120.0
    assert ok(http.post(base, json=body, headers=ADMIN), 201)["code"] == "INV"  # the same again: harmless
    clash = http.post(base, json={**body, "format": "INV/{YYYY}/{SEQ:5}"}, headers=ADMIN)
    assert clash.status_code == 409 and clash.json()["code"] == "NB010"
    assert http.post(base, json={"code": "APP", "format": "A-{SEQ:4}"}, headers=APP).status_code == 403

    altered = ok(http.patch(f"{base}/INV", json={"max_value": 5000, "reason": "volume"}, headers=ADMIN))
    assert altered["max_value"] == 5000 and altered["format"] == "INV-{YYYY}-{SEQ:4}"
    assert ok(http.get(f"{base}/INV", headers=APP))["max_value"] == 5000
    missing = http.get(f"{base}/NOPE", headers=READER)
    assert missing.status_code == 404 and missing.json()["code"] == "NB001"


def test_batches(http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    ok(
        http.post("/document-numbering/types", json={"code": "BAT", "format": "B-{SEQ:4}"}, headers=ADMIN),
        201,
    )
    issued = ok(
        http.post("/document-numbering/next-batch", json={"document_type": "BAT", "count": 3}, headers=APP),
        201,
    )
    assert issued["document_numbers"] == ["B-0001", "B-0002", "B-0003"]
    held = ok(
        http.post(
            "/document-numbering/reserve-batch", json={"document_type": "BAT", "count": 2}, headers=APP
        ),
        201,
    )
    assert [r["document_number"] for r in held["reservations"]] == ["B-0004", "B-0005"]
    token = held["reservations"][1]["token"]
    assert (
        ok(http.post("/document-numbering/confirm", json={"token": token}, headers=APP))["document_number"]
        == "B-0005"
    )
    too_many = http.post(
        "/document-numbering/next-batch", json={"document_type": "BAT", "count": 0}, headers=APP
    )
    assert too_many.status_code == 422 and too_many.json()["code"] == "NB006"


def test_an_import_too_large_is_413_and_runs_nothing(
    http: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    rows = "".join(f"LEG,LEG-{i:05d}\n" for i in range(10_001))
    body = ("document_type,document_number\n" + rows).encode()
    response = http.post(
        "/document-numbering/import", content=body, headers={**ADMIN, "content-type": "text/csv"}
    )
    assert response.status_code == 413 and "10,000 rows" in response.json()["detail"]
    assert sql.execute(
        "SELECT count(*) FROM docnum.ledger WHERE document_number = 'LEG-00000'"
    ).fetchone() == (0,)
