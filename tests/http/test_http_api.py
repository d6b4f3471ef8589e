"""The HTTP API through a real ``docnum serve`` process: the NestJS service's flow, every endpoint, every
error mapping, authentication, the grants deciding, idempotency under concurrent retries, and 64 concurrent
clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import jwt
import psycopg
import pytest

from support.http_server import (
    SECRET,
    HttpDatabase,
    Server,
    bearer,
    start_server,
    stop_server,
    token,
)

APP = bearer("docnum_app", "app-user")
READER = bearer("docnum_reader", "auditor")
ADMIN = bearer("docnum_admin", "admin-1")


@pytest.fixture(scope="module")
def server(http_database: HttpDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with http_database.connect(autocommit=True) as conn:
        for code, fmt, settings in [
            ("COR", "COR-{YYYY}-{SEQ:5}", ""),
            ("RFA", "{SCOPE}/RFA/{SEQ:4}", ", scope => 'PROJECT', allow_manual_override => true"),
            ("TINY", "T-{SEQ:1}", ", max_value => 2"),
            ("SLOW", "S-{SEQ:4}", ", lock_timeout => '300 ms'"),
            ("NOMAN", "N-{SEQ:4}", ""),
            ("LOAD", "L-{SEQ:6}", ""),
            ("IDEM", "I-{SEQ:4}", ""),
            ("ADM", "A-{SEQ:4}", ", allow_manual_override => true"),
            ("IMP", "IMP-{SEQ:4}", ""),
        ]:
            conn.execute(f"SELECT docnum.define_type(code => '{code}', format => '{fmt}'{settings})")
    log = tmp_path_factory.mktemp("http") / "server.log"
    running = start_server(http_database.login_dsn, log, "--rate-limit", "0")
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


def footprint(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute("SELECT (SELECT count(*) FROM docnum.ledger), (SELECT count(*) FROM docnum.audit_log)")
    counts = row.fetchone()
    assert counts is not None
    return counts[0], counts[1]


def problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert an RFC 9457 problem with this status (and NB code); return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["success"] is False and body["title"]
    if code is not None:
        assert body["code"] == code and body["type"] == f"urn:docnum:problem:{code}"
    assert "Traceback" not in response.text and "psycopg" not in response.text
    return body


# -- the NestJS service's endpoints -----------------------------------------------------------------------


def test_two_phase_flow_of_the_three_endpoints(http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    reserved = http.post("/document-numbering/reserve", json={"document_type": "COR"}, headers=APP)
    assert reserved.status_code == 201, reserved.text
    body = reserved.json()
    assert body["success"] is True
    data = body["data"]
    year = datetime.now(timezone.utc).year
    assert data["document_number"] == f"COR-{year}-00001"
    assert data["document_type"] == "COR" and data["scope_value"] is None
    assert datetime.fromisoformat(data["expires_at"]) > datetime.now(timezone.utc)
    uuid.UUID(data["token"])

    confirmed = http.post("/document-numbering/confirm", json={"token": data["token"]}, headers=APP)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == {
        "success": True,
        "data": {"document_number": data["document_number"], "token": data["token"]},
    }
    row = sql.execute(
        "SELECT state, actor FROM docnum.ledger WHERE document_number = %s", (data["document_number"],)
    ).fetchone()
    assert row == ("confirmed", "app-user")  # the token's sub is the actor


def test_cancel_then_confirm_is_gone(http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    data = http.post(
        "/document-numbering/reserve",
        json={"document_type": "RFA", "scope_value": "P1", "metadata": {"subject": "pump"}},
        headers=APP,
    ).json()["data"]
    assert data["document_number"] == "P1/RFA/0001" and data["metadata"] == {"subject": "pump"}
    cancelled = http.post("/document-numbering/cancel", json={"token": data["token"]}, headers=APP)
    assert cancelled.status_code == 200
    assert cancelled.json()["success"] is True and cancelled.json()["message"] == "Reservation cancelled"
    again = http.post("/document-numbering/confirm", json={"token": data["token"]}, headers=APP)
    problem(again, 410, "NB004")
    assert sql.execute(
        "SELECT state FROM docnum.ledger WHERE document_number = 'P1/RFA/0001'"
    ).fetchone() == ("cancelled",)
    # an unknown token and one that is not a UUID alike: the NestJS service's "not found or expired"
    problem(
        http.post("/document-numbering/confirm", json={"token": str(uuid.uuid4())}, headers=APP), 410, "NB004"
    )
    problem(http.post("/document-numbering/cancel", json={"token": "nope"}, headers=APP), 410, "NB004")


def test_next_and_idempotency_key(http: httpx.Client) -> None:
    first = http.post(
        "/document-numbering/next",
        json={"document_type": "IDEM", "document_ref": "doc-1"},
        headers={**APP, "Idempotency-Key": "k-1"},
    )
    assert first.status_code == 201, first.text
    assert first.json()["data"]["document_number"] == "I-0001"
    retry = http.post(
        "/document-numbering/next",
        json={"document_type": "IDEM", "document_ref": "doc-1"},
        headers={**APP, "Idempotency-Key": "k-1"},
    )
    assert retry.json()["data"]["document_number"] == "I-0001"
    # the same key with another body: refused, as Stripe does, not answered with the first request's number
    problem(
        http.post(
            "/document-numbering/next",
            json={"document_type": "IDEM"},
            headers={**APP, "Idempotency-Key": "k-1"},
        ),
        422,
        "NB012",
    )
    # the same key for another request (a reserve): NB012, 422
    reused = http.post(
        "/document-numbering/reserve",
        json={"document_type": "IDEM"},
        headers={**APP, "Idempotency-Key": "k-1"},
    )
    problem(reused, 422, "NB012")
    # another subject's key of the same text is another key
    other = http.post(
        "/document-numbering/next",
        json={"document_type": "IDEM"},
        headers={**bearer("docnum_app", "someone-else"), "Idempotency-Key": "k-1"},
    )
    assert other.json()["data"]["document_number"] == "I-0002"
    found = http.get("/document-numbering/requests/k-1", headers=APP)
    assert found.status_code == 200 and found.json()["data"]["document_number"] == "I-0001"
    problem(http.get("/document-numbering/requests/never-used", headers=APP), 404)


def test_idempotency_under_concurrent_retries(server: Server, sql: psycopg.Connection[Any]) -> None:
    headers = {**APP, "Idempotency-Key": "concurrent-1"}

    async def attempt(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            "/document-numbering/reserve", json={"document_type": "IDEM"}, headers=headers
        )

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(attempt(client) for _ in range(16)))

    responses = asyncio.run(main())
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    answers = {(r.json()["data"]["token"], r.json()["data"]["document_number"]) for r in responses}
    assert len(answers) == 1
    ((_, number),) = answers
    rows = sql.execute(
        "SELECT document_number FROM docnum.ledger WHERE request_id LIKE '%:concurrent-1'"
    ).fetchall()
    assert rows == [(number,)]


def test_64_concurrent_clients_reserve_and_confirm(server: Server, sql: psycopg.Connection[Any]) -> None:
    rounds = 3

    async def client_run(client: httpx.AsyncClient, n: int) -> list[str]:
        headers = bearer("docnum_app", f"client-{n}")
        numbers = []
        for _ in range(rounds):
            reserved = await client.post(
                "/document-numbering/reserve", json={"document_type": "LOAD"}, headers=headers
            )
            assert reserved.status_code == 201, reserved.text
            data = reserved.json()["data"]
            confirmed = await client.post(
                "/document-numbering/confirm", json={"token": data["token"]}, headers=headers
            )
            assert confirmed.status_code == 200, confirmed.text
            assert confirmed.json()["data"]["document_number"] == data["document_number"]
            numbers.append(data["document_number"])
        return numbers

    async def main() -> list[list[str]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client_run(client, n) for n in range(64)))

    numbers = [number for numbers in asyncio.run(main()) for number in numbers]
    total = 64 * rounds
    assert len(set(numbers)) == total  # no duplicates
    assert sorted(numbers) == [f"L-{i:06d}" for i in range(1, total + 1)]  # no gaps
    states = sql.execute(
        "SELECT state, count(*) FROM docnum.ledger WHERE document_type = 'LOAD' GROUP BY 1"
    ).fetchall()
    assert states == [("confirmed", total)]


# -- errors ----------------------------------------------------------------------------------------------


def test_nb_codes_map_to_statuses(http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    problem(
        http.post("/document-numbering/reserve", json={"document_type": "NOPE"}, headers=APP), 404, "NB001"
    )
    for _ in range(2):
        assert (
            http.post("/document-numbering/next", json={"document_type": "TINY"}, headers=APP).status_code
            == 201
        )
    exhausted = problem(
        http.post("/document-numbering/next", json={"document_type": "TINY"}, headers=APP), 409, "NB002"
    )
    assert exhausted["hint"] == "An administrator can raise the type's maximum value."
    assert "parameter" not in exhausted
    no_scope = problem(
        http.post("/document-numbering/reserve", json={"document_type": "RFA"}, headers=APP), 422, "NB006"
    )
    assert no_scope["detail"]
    # the argument at fault (the database's COLUMN), named as this API names it
    assert no_scope["parameter"] == "scope_value"
    assert no_scope["hint"] == "Give the project identifier as the scope value, e.g. PRJ-7."
    done = http.post("/document-numbering/next", json={"document_type": "NOMAN"}, headers=APP).json()["data"]
    problem(
        http.post(
            "/document-numbering/manual",
            json={"document_type": "NOMAN", "document_number": "N-0009", "reason": "r"},
            headers=ADMIN,
        ),
        409,
        "NB007",
    )
    assert (
        http.post(
            "/document-numbering/manual",
            json={"document_type": "ADM", "document_number": "A-0005", "reason": "paper"},
            headers=ADMIN,
        ).status_code
        == 201
    )
    problem(
        http.post(
            "/document-numbering/manual",
            json={"document_type": "ADM", "document_number": "A-0005", "reason": "again"},
            headers=ADMIN,
        ),
        409,
        "NB005",
    )
    reserved = http.post("/document-numbering/reserve", json={"document_type": "NOMAN"}, headers=APP).json()[
        "data"
    ]
    http.post("/document-numbering/confirm", json={"token": reserved["token"]}, headers=APP)
    problem(
        http.post("/document-numbering/cancel", json={"token": reserved["token"]}, headers=APP), 409, "NB009"
    )
    problem(
        http.post(
            "/document-numbering/void", json={"document_number": "N-9999", "reason": "r"}, headers=ADMIN
        ),
        404,
        "NB011",
    )
    http.post(
        "/document-numbering/void",
        json={"document_number": done["document_number"], "reason": "r"},
        headers=ADMIN,
    )
    problem(
        http.post(
            "/document-numbering/void",
            json={"document_number": done["document_number"], "reason": "r"},
            headers=ADMIN,
        ),
        409,
        "NB009",
    )


def test_a_problem_names_the_argument_at_fault_as_the_api_names_it(http: httpx.Client) -> None:
    """The database names the argument in COLUMN with its SQL name; the problem's ``parameter`` is the body
    field, path parameter, header or token claim that carries it on this route."""
    cases = [
        (
            "/document-numbering/reserve",
            {"document_type": "COR", "ttl_seconds": 8 * 86400},
            APP,
            "ttl_seconds",
        ),
        ("/document-numbering/next", {"document_type": "COR", "scope_value": "P-1"}, APP, "scope_value"),
        ("/document-numbering/next", {"document_type": "nope"}, APP, "document_type"),
        (
            "/document-numbering/types",
            {"code": "NEW", "format": "{TYPE}-{SEQ}", "scope": "TEAM"},
            ADMIN,
            "scope",
        ),
        ("/document-numbering/types", {"code": "new", "format": "{TYPE}-{SEQ}"}, ADMIN, "code"),
        ("/document-numbering/types", {"code": "NEW", "format": "{TYPE}"}, ADMIN, "format"),
    ]
    for path, body, headers, parameter in cases:
        answer = http.post(path, json=body, headers=headers).json()
        assert answer.get("parameter") == parameter, (path, body, answer)
        assert "=>" not in answer.get("hint", "") and "docnum." not in answer.get("hint", ""), answer
    too_long = http.post(
        "/document-numbering/next",
        json={"document_type": "COR"},
        headers=bearer("docnum_app", "x" * 300),
    ).json()
    assert (too_long["code"], too_long["parameter"]) == ("NB006", "sub")  # the actor is the token's subject


def test_lock_timeout_is_503_with_retry_after(http: httpx.Client, http_database: HttpDatabase) -> None:
    with http_database.connect() as holder:
        holder.execute("SELECT docnum.next_number(document_type => 'SLOW')")  # holds the counter, uncommitted
        response = http.post("/document-numbering/reserve", json={"document_type": "SLOW"}, headers=APP)
        holder.rollback()
    body = problem(response, 503, "NB003")
    assert response.headers["retry-after"] == "1"
    assert body["hint"].startswith("Retry")


def test_malformed_bodies_are_422_problems(http: httpx.Client) -> None:
    body = problem(http.post("/document-numbering/reserve", json={"scope_value": "P1"}, headers=APP), 422)
    assert body["errors"][0]["location"] == ["body", "document_type"]
    problem(
        http.post(
            "/document-numbering/reserve",
            content=b"{not json",
            headers={**APP, "content-type": "application/json"},
        ),
        422,
    )
    problem(http.get("/document-numbering/nothing-here", headers=APP), 404)


def test_an_unexpected_error_is_a_bare_500(
    http: httpx.Client, server: Server, sql: psycopg.Connection[Any]
) -> None:
    # An error no NB code names, raised inside the database: a trigger put there by someone else.
    sql.execute("SELECT docnum.define_type('BOOM', 'B-{SEQ:4}', actor => 'test')")
    sql.execute(
        "CREATE FUNCTION public.refuse_boom() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN RAISE EXCEPTION 'not today: secret detail' USING ERRCODE = 'XX001'; END$$"
    )
    sql.execute(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON docnum.ledger FOR EACH ROW"
        " WHEN (NEW.document_type = 'BOOM') EXECUTE FUNCTION public.refuse_boom()"
    )
    try:
        response = http.post("/document-numbering/next", json={"document_type": "BOOM"}, headers=APP)
    finally:
        sql.execute("DROP TRIGGER refuse_boom ON docnum.ledger")
        sql.execute("DROP FUNCTION public.refuse_boom()")
    body = problem(response, 500)
    assert body["detail"] == "the server could not answer this request" and "secret" not in response.text
    assert set(body) == {"type", "title", "status", "detail", "instance", "success"}


# -- authentication and the grants -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["no token", "not a jwt", "bad signature", "expired", "no sub", "wrong algorithm"],
)
def test_authentication_failures_are_401_and_run_nothing(
    http: httpx.Client, sql: psycopg.Connection[Any], case: str
) -> None:
    now = int(datetime.now(timezone.utc).timestamp())
    headers = {
        "no token": {},
        "not a jwt": {"Authorization": "Bearer not-a-token"},
        "bad signature": {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "x", "role": "docnum_app", "exp": now + 600}, SECRET + "x", "HS256")
        },
        "expired": {"Authorization": f"Bearer {token('docnum_app', 'x', ttl=-120)}"},
        "no sub": {
            "Authorization": "Bearer " + jwt.encode({"role": "docnum_app", "exp": now + 600}, SECRET, "HS256")
        },
        "wrong algorithm": {
            "Authorization": "Bearer "
            + jwt.encode({"sub": "x", "role": "docnum_app", "exp": now + 600}, SECRET, "HS384")
        },
    }[case]
    before = footprint(sql)
    response = http.post("/document-numbering/reserve", json={"document_type": "COR"}, headers=headers)
    problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert footprint(sql) == before


@pytest.mark.parametrize("role", ["postgres", "docnum_owner", "docnum_authenticator", "nobody", None])
def test_a_role_claim_outside_the_three_is_403_and_runs_nothing(
    http: httpx.Client, sql: psycopg.Connection[Any], role: str | None
) -> None:
    superuser = sql.execute("SELECT current_user").fetchone()
    assert superuser is not None
    claim = superuser[0] if role == "postgres" else role
    before = footprint(sql)
    response = http.post(
        "/document-numbering/reserve", json={"document_type": "COR"}, headers=bearer(claim, "intruder")
    )  # type: ignore[arg-type]
    problem(response, 403)
    assert footprint(sql) == before


def test_the_grants_decide_what_a_role_may_do(http: httpx.Client, sql: psycopg.Connection[Any]) -> None:
    before = footprint(sql)
    problem(http.post("/document-numbering/reserve", json={"document_type": "COR"}, headers=READER), 403)
    problem(
        http.post(
            "/document-numbering/manual",
            json={"document_type": "ADM", "document_number": "A-0077", "reason": "r"},
            headers=APP,
        ),
        403,
    )
    problem(
        http.get(
            "/document-numbering/audit-export", params={"from": "2000-01-01", "to": "2100-01-01"}, headers=APP
        ),
        403,
    )
    problem(
        http.post(
            "/document-numbering/set-counter",
            json={"document_type": "ADM", "value": 50, "reason": "r"},
            headers=READER,
        ),
        403,
    )
    assert footprint(sql) == before
    # the reader reads; the admin does everything the app does
    assert http.get("/document-numbering/status", headers=READER).status_code == 200
    assert (
        http.post("/document-numbering/next", json={"document_type": "ADM"}, headers=ADMIN).status_code == 201
    )
