"""GET /metrics of `docnum serve`: docnum's figures through the server's own login role, and its requests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from support.exporter import samples
from support.http_server import HttpDatabase, Server, bearer, start_server, stop_server


@pytest.fixture(scope="module")
def served(http_database: HttpDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with http_database.connect(autocommit=True) as conn:
        conn.execute("SELECT docnum.define_type(code => 'COR', format => 'COR-{SEQ:4}')")
    running = start_server(http_database.login_dsn, tmp_path_factory.mktemp("http") / "metrics.log")
    yield running
    stop_server(running)


def test_metrics_need_no_token_and_count_what_the_api_did(served: Server) -> None:
    with httpx.Client(base_url=served.url) as http:
        reserved = http.post("/document-numbering/reserve", json={"document_type": "COR"}, headers=bearer())
        assert reserved.status_code == 201
        assert (
            http.post(
                "/document-numbering/reserve", json={"document_type": "NOPE"}, headers=bearer()
            ).status_code
            == 404
        )
        answer = http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    # docnum's figures, read from the database as docnum_reader (the login role may only switch to it)
    assert found[("numbering_database_up", ())] == 1
    assert found[("numbering_sequences_total", (("document_type", "COR"),))] == 1
    assert found[("numbering_reservations", (("document_type", "COR"), ("state", "pending")))] == 1
    # this server's requests, by route template and status
    route = (("method", "POST"), ("route", "/document-numbering/reserve"))
    assert found[("numbering_http_requests_total", (*route[:1], route[1], ("status", "201")))] == 1
    assert found[("numbering_http_requests_total", (*route[:1], route[1], ("status", "404")))] == 1
    assert found[("numbering_http_request_duration_seconds_count", route)] == 2


def test_no_metrics_turns_the_endpoint_off(
    http_database: HttpDatabase, tmp_path_factory: pytest.TempPathFactory
) -> None:
    running = start_server(
        http_database.login_dsn, tmp_path_factory.mktemp("http") / "no-metrics.log", "--no-metrics"
    )
    try:
        assert httpx.get(f"{running.url}/metrics").status_code == 404
    finally:
        stop_server(running)
