"""Bearer JWTs, the way PostgREST reads them: the ``role`` claim names the database role of the request.

Keys: HS256 with the shared secret ``DOCNUM_JWT_SECRET``, or RS256/ES256 with the public keys of a JWKS file
``DOCNUM_JWKS_FILE`` (read once at start; a ``kid`` header picks the key, a set of one key needs none).  A
token must carry ``exp`` (checked, with 30 s of leeway for clock skew) and ``sub`` (the actor recorded with
every number); ``aud`` is checked only when ``DOCNUM_JWT_AUDIENCE`` is set.  Failures:

* no token, a malformed one, a bad signature, an expired one, no ``sub``: 401 with ``WWW-Authenticate``;
* a valid token whose ``role`` is missing or is not one of :data:`ROLES` (a superuser, ``docnum_owner``, any
  other role): 403.

Nothing touches the database before this check has passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWKSet

from docnum.http.errors import Problem

__all__ = ["LEEWAY_SECONDS", "ROLES", "Principal", "Verifier"]

#: The database roles a token may name; the pool's login role may switch to these and to nothing else.
ROLES = frozenset({"docnum_app", "docnum_reader", "docnum_admin"})
#: Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` (PostgREST allows the same 30 s).
LEEWAY_SECONDS = 30
#: The shortest HS256 secret accepted (RFC 7518 3.2: a key at least as long as the hash, 256 bits).
MIN_SECRET_BYTES = 32

#: Verified tokens remembered (then forgotten all at once: a cache, not a store).
_CACHE_SIZE = 10_000

_HMAC = ("HS256",)
_ASYMMETRIC = ("RS256", "ES256")


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the database role it runs as, the actor (``sub``) and every claim."""

    role: str
    subject: str
    claims: Mapping[str, Any] = field(default_factory=dict)


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _unauthorized(detail: str, *, error: str | None = "invalid_token") -> Problem:
    challenge = 'Bearer realm="docnum"' + (f', error="{error}"' if error else "")
    return Problem(
        401,
        "Unauthorized",
        detail,
        hint="Send Authorization: Bearer <JWT> signed with the server's key, with exp, sub and role claims.",
        headers={"WWW-Authenticate": challenge},
    )


class Verifier:
    """Checks bearer tokens against the configured keys and turns them into a :class:`Principal`."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        jwks_file: Path | None = None,
        audience: str | None = None,
    ) -> None:
        if not secret and jwks_file is None:
            raise ValueError("set DOCNUM_JWT_SECRET (HS256) or DOCNUM_JWKS_FILE (RS256/ES256)")
        if secret and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"DOCNUM_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
        self._secret = secret or None
        self._keys: PyJWKSet | None = None
        if jwks_file is not None:
            document = json.loads(jwks_file.read_text(encoding="utf-8"))
            keys = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(keys, list) or not keys:
                raise ValueError(f"{jwks_file} is not a JWKS document with at least one key")
            self._keys = PyJWKSet(keys)
        self._audience = audience or None
        self._verified: dict[str, tuple[Principal, float, float]] = {}

    @property
    def algorithms(self) -> tuple[str, ...]:
        return (_HMAC if self._secret else ()) + (_ASYMMETRIC if self._keys is not None else ())

    def _key(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthorized("the bearer token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise _unauthorized(f"tokens signed with {algorithm!r} are not accepted")
        if algorithm in _HMAC:
            return self._secret, algorithm
        assert self._keys is not None
        kid = header.get("kid")
        candidates = [key for key in self._keys.keys if kid is None or key.key_id == kid]
        if kid is None and len(self._keys.keys) != 1:
            raise _unauthorized("the token has no kid header and the key set holds several keys")
        if not candidates:
            raise _unauthorized("no key of the key set has the token's kid")
        if candidates[0].algorithm_name != algorithm:  # an RSA key never checks an ES256 signature, etc.
            raise _unauthorized(f"the token's key does not sign with {algorithm}")
        return candidates[0].key, algorithm

    def verify(self, token: str | None) -> Principal:
        """The principal of a bearer token; a :class:`Problem` (401 or 403) when it is not acceptable.

        A token that verified once is remembered with its validity window (a client sends the same token for
        many requests, and checking a signature is most of the work here); only ``exp``/``nbf`` are checked
        again.
        """
        if not token:
            raise _unauthorized("this endpoint needs a bearer token", error=None)
        cached = self._verified.get(token)
        if cached is not None:
            principal, not_before, expires = cached
            now = time.time()
            if not_before - LEEWAY_SECONDS <= now < expires + LEEWAY_SECONDS:
                return principal
            del self._verified[token]
        principal = self._verify(token)
        if len(self._verified) >= _CACHE_SIZE:
            self._verified.clear()
        claims = principal.claims
        self._verified[token] = (principal, _number(claims.get("nbf"), 0.0), _number(claims.get("exp"), 0.0))
        return principal

    def _verify(self, token: str) -> Principal:
        key, algorithm = self._key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except jwt.InvalidSignatureError:
            raise _unauthorized("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthorized(f"the token has no {exc.claim} claim") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized("the token is not meant for this service (aud)") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _unauthorized("the token is not valid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise _unauthorized("the token's sub claim must be a non-empty string")
        role = claims.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise Problem(
                403,
                "Forbidden",
                "the token's role claim names no role this service runs requests as",
                hint="The role claim must be one of " + ", ".join(sorted(ROLES)) + ".",
            )
        return Principal(role=role, subject=subject, claims=claims)
