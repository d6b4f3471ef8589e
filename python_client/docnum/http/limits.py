"""What a request may cost before the application looks at it: the size of its head and of its body, and a
valid token before the body of a request that needs one is read at all.

* The head (request line and headers): at most :data:`HEAD_LIMIT` bytes, else 431 and the connection closes
  (:class:`docnum.http.protocol.BoundedHttpToolsProtocol` counts the bytes uvicorn's parser is fed until the
  head is complete, so a huge header is refused while it arrives, never held in memory whole).
* The body: at most :data:`BODY_LIMIT` bytes, or the route's own limit (the import's), else 413. A declared
  ``Content-Length`` over the limit is refused before a byte is read; a body that grows past it while it
  arrives is refused there. :class:`RequestLimits` reads at most that much, then hands the body on.
* A request with a body to a route that needs a token is refused (401, 403) before its body is read: nobody
  without a valid token can make the server hold anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docnum.http.errors import Problem, problem_response

__all__ = ["BODY_LIMIT", "HEAD_LIMIT", "RequestLimits"]

#: Bytes of a request's line and headers (uvicorn's h11 default is 16 KiB too).
HEAD_LIMIT = 16 * 1024
#: Bytes of a request body, unless its route says otherwise.
BODY_LIMIT = 1024 * 1024

_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _TooLarge(Exception):
    pass


class _Gone(Exception):
    pass


class RequestLimits:
    """Pure ASGI middleware: body size limits and the token check before a body is read.

    ``limits`` maps a path to its body limit (the import's); ``needs_token(path)`` tells whether a route
    requires a bearer token, and ``verify`` checks one (raising the 401/403 :class:`Problem`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verify: Callable[[str | None], Any],
        needs_token: Callable[[str], bool],
        limits: Mapping[str, int] | None = None,
        default_limit: int = BODY_LIMIT,
    ) -> None:
        self.app = app
        self.verify = verify
        self.needs_token = needs_token
        self.limits = dict(limits or {})
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        limit = self.limits.get(scope["path"], self.default_limit)
        try:
            if self.needs_token(scope["path"]):
                self.verify(_bearer(request.headers.get("authorization")))
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _TooLarge
            body = await _read(receive, limit)
        except _Gone:
            return  # the client left while sending: there is nobody to answer
        except Problem as problem:
            # refused before its body was read: the connection closes rather than read what is left of it
            problem.headers = {**(problem.headers or {}), "Connection": "close"}
            await _answer(scope, receive, send, problem)
            return
        except _TooLarge:
            await _answer(
                scope,
                receive,
                send,
                Problem(
                    413,
                    "Content Too Large",
                    f"this request's body may hold at most {limit:,} bytes",
                    hint="Send less: a smaller batch, less metadata, a smaller import.",
                    headers={"Connection": "close"},
                ),
            )
            return
        await self.app(scope, _replay(body, receive), send)


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the application the body already read, then waits for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(scope: Scope, receive: Receive, send: Send, problem: Problem) -> None:
    response = problem_response(
        Request(scope),
        problem.status,
        problem.title,
        problem.detail,
        code=problem.code,
        hint=problem.hint,
        headers=problem.headers,
        extra=problem.extra,
    )
    await response(scope, receive, send)
