"""The per-subject rate limit and asymmetric tokens (a JWKS file) of the HTTP API, through real servers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from psycopg.conninfo import make_conninfo

from support.http_server import HttpDatabase, Server, bearer, start_server, stop_server


@pytest.fixture(scope="module")
def limited(http_database: HttpDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with http_database.connect(autocommit=True) as conn:
        conn.execute("SELECT docnum.define_type(code => 'COR', format => 'COR-{SEQ:4}')")
    running = start_server(
        http_database.login_dsn, tmp_path_factory.mktemp("http") / "limited.log", "--rate-limit", "5"
    )
    yield running
    stop_server(running)


def count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM docnum.ledger").fetchone()
    assert row is not None
    return int(row[0])


def test_rate_limit_per_subject_is_429_with_retry_after(limited: Server, http_database: HttpDatabase) -> None:
    alice, bob = bearer("docnum_app", "alice"), bearer("docnum_app", "bob")
    with httpx.Client(base_url=limited.url) as http, http_database.connect(autocommit=True) as sql:
        for i in range(5):  # reserve and next share the budget
            path = "/document-numbering/reserve" if i % 2 else "/document-numbering/next"
            assert http.post(path, json={"document_type": "COR"}, headers=alice).status_code == 201
        before = count(sql)
        refused = http.post("/document-numbering/reserve", json={"document_type": "COR"}, headers=alice)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert 1 <= int(refused.headers["retry-after"]) <= 12  # 5 a minute: one every 12 s
        assert count(sql) == before  # nothing ran
        # another subject has its own budget; reads are not limited
        assert (
            http.post("/document-numbering/next", json={"document_type": "COR"}, headers=bob).status_code
            == 201
        )
        assert (
            http.get("/document-numbering/status", headers=bearer("docnum_reader", "alice")).status_code
            == 200
        )


def _keys(tmp: Path) -> tuple[Path, dict[str, Any]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
    ec_jwk.update(kid="ec-1", alg="ES256", use="sig")
    path = tmp / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
    return path, {"rsa-1": rsa_key, "ec-1": ec_key}


@pytest.fixture(scope="module")
def asymmetric(
    http_database: HttpDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("jwks")
    jwks, private = _keys(tmp)
    running = start_server(
        http_database.login_dsn,
        tmp / "server.log",
        env={"DOCNUM_JWT_SECRET": "", "DOCNUM_JWKS_FILE": str(jwks), "DOCNUM_JWT_AUDIENCE": "docnum"},
    )
    yield running, private
    stop_server(running)


def test_rs256_and_es256_tokens_from_a_jwks_file(asymmetric: tuple[Server, dict[str, Any]]) -> None:
    server, private = asymmetric
    claims = {"sub": "svc", "role": "docnum_app", "aud": "docnum", "exp": int(time.time()) + 600}

    def headers(kid: str, alg: str, key: Any, **extra: Any) -> dict[str, str]:
        signed = jwt.encode({**claims, **extra}, key, algorithm=alg, headers={"kid": kid})
        return {"Authorization": f"Bearer {signed}"}

    with httpx.Client(base_url=server.url) as http:
        for kid, alg in [("rsa-1", "RS256"), ("ec-1", "ES256")]:
            response = http.post(
                "/document-numbering/next",
                json={"document_type": "COR"},
                headers=headers(kid, alg, private[kid]),
            )
            assert response.status_code == 201, response.text
        # the other key's kid, another audience, an HS256 token (no secret configured): 401
        assert (
            http.post(
                "/document-numbering/next",
                json={"document_type": "COR"},
                headers=headers("ec-1", "RS256", private["rsa-1"]),
            ).status_code
            == 401
        )
        assert (
            http.post(
                "/document-numbering/next",
                json={"document_type": "COR"},
                headers=headers("rsa-1", "RS256", private["rsa-1"], aud="other"),
            ).status_code
            == 401
        )
        assert (
            http.post("/document-numbering/next", json={"document_type": "COR"}, headers=bearer()).status_code
            == 401
        )


def test_a_read_only_database_is_503_nb008(http_database: HttpDatabase, tmp_path: Path) -> None:
    """Every connection read-only (as on a standby, or a primary put in read-only mode): numbering refuses,
    503 with Retry-After, and reading still works."""
    read_only = make_conninfo(http_database.login_dsn, options="-c default_transaction_read_only=on")
    server = start_server(read_only, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.url) as http:
            refused = http.post("/document-numbering/next", json={"document_type": "COR"}, headers=bearer())
            assert refused.status_code == 503 and refused.json()["code"] == "NB008", refused.text
            assert refused.headers["retry-after"] == "5"
            assert http.get("/document-numbering/status", headers=bearer("docnum_reader")).status_code == 200
    finally:
        stop_server(server)
