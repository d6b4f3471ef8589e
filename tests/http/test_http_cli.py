"""``docnum serve`` as a command: its help, and its refusals (one error line, no traceback, no server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import jwt
import pytest

DOCNUM = [sys.executable, "-m", "docnum"]


def docnum(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in {**os.environ, **env}.items() if v}
    return subprocess.run([*DOCNUM, *args], capture_output=True, text=True, timeout=60, env=environment)


def test_serve_help_has_an_example() -> None:
    result = docnum("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert "Example: docnum serve --host 127.0.0.1 --port 8000" in " ".join(result.stdout.split())
    for option in ("--host", "--port", "--rate-limit", "--pool-max"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DOCNUM_JWT_SECRET": "", "DOCNUM_JWKS_FILE": ""}, "set DOCNUM_JWT_SECRET"),
        ({"DOCNUM_JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"DOCNUM_JWT_SECRET": "", "DOCNUM_JWKS_FILE": "/nonexistent/jwks.json"}, "jwks.json"),
    ],
)
def test_serve_refuses_without_usable_keys(env: dict[str, str], message: str) -> None:
    result = docnum("serve", "--port", "1", DOCNUM_DSN="postgresql://127.0.0.1:1/nowhere", **env)
    assert result.returncode == 1
    assert result.stderr.startswith("error setting:") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_token_signs_what_serve_accepts() -> None:
    secret = "s" * 40
    result = docnum("token", "docnum_reader", "--sub", "=auditor", "--ttl", "120", DOCNUM_JWT_SECRET=secret)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "=auditor" and claims["role"] == "docnum_reader"
    assert 100 <= claims["exp"] - time.time() <= 120
    with_audience = docnum(
        "token", "docnum_app", "--sub", "a", "--aud", "authenticated", DOCNUM_JWT_SECRET=secret
    )
    assert jwt.decode(with_audience.stdout.strip(), secret, ["HS256"], audience="authenticated")["aud"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["docnum_app"], {"DOCNUM_JWT_SECRET": ""}, "DOCNUM_JWT_SECRET is not set"),
        (["postgres"], {"DOCNUM_JWT_SECRET": "s" * 40}, "not a docnum role"),
    ],
)
def test_token_refusals_are_one_error_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = docnum("token", *args, "--sub", "alice", **env)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("configured", "printed"),
    [
        (
            "postgresql://postgres:secret@127.0.0.1:5432/erp?sslmode=disable&user=x",
            "postgresql://docnum_authenticator:p%40ss%20word@127.0.0.1:5432/erp?sslmode=disable",
        ),
        (
            "postgresql://postgres:@/postgres?host=/var/lib/docnum/pgdata",
            "postgresql://docnum_authenticator:p%40ss%20word@/postgres?host=/var/lib/docnum/pgdata",
        ),
        (
            "host=/tmp dbname=erp user=postgres",
            "user=docnum_authenticator dbname=erp host=/tmp password='p@ss word'",
        ),
    ],
)
def test_dsn_names_another_login_on_the_same_database(configured: str, printed: str) -> None:
    result = docnum("dsn", "--user", "docnum_authenticator", "--password", "p@ss word", DOCNUM_DSN=configured)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == printed
    assert docnum("dsn", "--password", "x", DOCNUM_DSN=configured).returncode == 2
