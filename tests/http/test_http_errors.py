"""The HTTP API's error contract beyond the database's codes: every NB code has one status, an unexpected
exception is a bare 500, and a database that does not answer is a 503 (a real server, nowhere to connect)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from docnum.errors import ERRORS
from docnum.http.errors import NB_STATUS, _CatchAll
from support.http_server import bearer, free_port, start_server, stop_server


def test_every_nb_code_has_one_status() -> None:
    assert set(NB_STATUS) == set(ERRORS)
    assert {code: NB_STATUS[code].status for code in ("NB001", "NB002", "NB003", "NB004", "NB006")} == {
        "NB001": 404,
        "NB002": 409,
        "NB003": 503,
        "NB004": 410,
        "NB006": 422,
    }
    assert NB_STATUS["NB003"].retry_after is not None and NB_STATUS["NB008"].retry_after is not None


def test_an_unexpected_exception_is_a_bare_500(caplog: pytest.LogCaptureFixture) -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("secret internals: password=hunter2")

    async def get() -> httpx.Response:
        # where create_app puts it: inside Starlette's own last-resort handler, outside the routes
        app = Starlette(routes=[Route("/boom", boom)], middleware=[Middleware(_CatchAll)])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            return await client.get("/boom")

    response = asyncio.run(get())
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "the server could not answer this request",
        "success": False,
    }
    assert "hunter2" in caplog.text  # the operator's log has it, the client never does


def test_a_database_that_does_not_answer_is_503(tmp_path: Path) -> None:
    nowhere = f"postgresql://docnum_authenticator@127.0.0.1:{free_port()}/nowhere?connect_timeout=1"
    server = start_server(nowhere, tmp_path / "server.log", "--pool-timeout", "0.5")
    try:
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/healthz").status_code == 200
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
            response = http.post(
                "/document-numbering/reserve", json={"document_type": "COR"}, headers=bearer()
            )
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert response.headers["content-type"] == "application/problem+json"
            assert "127.0.0.1" not in response.text and "nowhere" not in response.text
    finally:
        stop_server(server)
