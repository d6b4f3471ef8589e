"""``docnum serve`` as a command: its help, and its refusals (one error line, no traceback, no server)."""

from __future__ import annotations

import os
import subprocess
import sys

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
