"""The audit export, streamed as JSON Lines or CSV, each stream bounded in time and number (docnum_reader)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

import anyio
import anyio.lowlevel
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Send

from docnum.http.auth import Principal
from docnum.http.bodies import Text
from docnum.http.common import (
    ERROR_RESPONSES,
    Caller,
    app_state,
)
from docnum.http.errors import Problem, ResponseAbandoned
from docnum.http.settings import EXPORT_CHUNK, PREFIX, AppState
from docnum.interchange.exports import ExportEncoder, ExportFormat
from docnum.models import AuditEntry

log = logging.getLogger("docnum.http")

router = APIRouter()
TAGS: list[str | Enum] = ["reports"]


@router.get(
    f"{PREFIX}/audit-export",
    tags=TAGS,
    summary="Audit rows with from <= occurred_at < to, streamed as JSON Lines or CSV (docnum_reader).",
    responses={
        **ERROR_RESPONSES,
        200: {"content": {"application/x-ndjson": {}, "text/csv": {}}, "description": "The rows."},
    },
)
async def audit_export(
    request: Request,
    caller: Caller,
    start: Annotated[datetime, Query(alias="from", description="Start (inclusive), ISO 8601.")],
    end: Annotated[datetime, Query(alias="to", description="End (exclusive), ISO 8601.")],
    document_type: Annotated[Text | None, Query()] = None,
    format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",
) -> StreamingResponse:
    return await _export_response(app_state(request), caller, start, end, document_type, format)


class _ExportStream(StreamingResponse):
    """A streamed export that cannot hold its connection for ever: every chunk must be taken by the client
    within ``send_timeout`` seconds and the whole export must end within ``max_seconds``; otherwise the
    export stops, its database transaction ends and the connection is dropped (the client sees an incomplete
    body, never a complete-looking truncated one)."""

    def __init__(self, *args: Any, send_timeout: float, max_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_timeout = send_timeout
        self.max_seconds = max_seconds

    async def stream_response(self, send: Send) -> None:
        deadline = anyio.current_time() + self.max_seconds
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async for chunk in self.body_iterator:
                data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
                left = min(self.send_timeout, deadline - anyio.current_time())
                with anyio.move_on_after(max(left, 0.0)) as waited:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                # A send to a client that has gone returns at once, and so may a fetch: without this, nothing
                # would let the server's disconnect watcher stop an export whose client hung up.
                await anyio.lowlevel.checkpoint()
                if waited.cancelled_caught:
                    reason = (
                        f"it ran past its limit of {self.max_seconds:g} s"
                        if anyio.current_time() >= deadline
                        else f"its client took nothing for {self.send_timeout:g} s"
                    )
                    log.info("audit export stopped: %s", reason)
                    raise ResponseAbandoned(reason)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (asyncio.CancelledError, OSError):
            log.info("audit export ended early: the client hung up")
            raise
        finally:  # whatever ended it, its transaction ends and its connection goes back now
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


async def _export_response(
    state: AppState,
    caller: Principal,
    start: datetime,
    end: datetime,
    document_type: str | None,
    fmt: str,
) -> StreamingResponse:
    """Stream an audit export from a server-side cursor, a chunk at a time; the connection (one transaction
    as the caller's role) is held until the last row is sent, and then given back.

    At most ``export_slots`` exports stream at once (503 beyond), so the exports hold a bounded share of the
    pool and every other request keeps the rest; each is bounded in time (:class:`_ExportStream`), and
    PostgreSQL ends its transaction should this process stop fetching (idle_in_transaction_session_timeout).
    The first row is read before the response starts, so a refusal (403, NB006) is still a proper problem
    response; a failure after that cuts the response short."""
    settings = state.settings
    if state.exports >= settings.export_slots:
        raise Problem(
            503,
            "Too many exports",
            f"{settings.export_slots} audit exports are streaming already; this server runs no more at once",
            hint="Try again shortly, or export a shorter time range.",
            headers={"Retry-After": "5"},
        )
    state.exports += 1
    stack = AsyncExitStack()
    stack.callback(_release_export_slot, state)
    try:
        numbering = await stack.enter_async_context(
            state.database.session(caller, idle_timeout_s=int(settings.export_send_timeout * 2 + 10))
        )
        rows = numbering.audit_export(start, end, document_type, fetch_size=EXPORT_CHUNK)
        first: AuditEntry | None = await rows.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stack.__aexit__(*sys.exc_info())
        raise

    encoder = ExportEncoder(ExportFormat(fmt))

    async def body() -> AsyncIterator[str]:
        failed: BaseException | None = None
        try:
            yield encoder.header()
            chunk: list[AuditEntry] = [first] if first is not None else []
            more = first is not None
            while more:
                # A fetch is never interrupted: a client that hangs up stops the export between two chunks,
                # and its connection goes back to the pool whole.
                with anyio.CancelScope(shield=True):
                    more = await _fill(chunk, rows, EXPORT_CHUNK)
                yield encoder.rows(chunk)
                chunk = []
            if first is None:
                yield encoder.rows(chunk)
        except (
            GeneratorExit,
            asyncio.CancelledError,
        ) as exc:  # stopped, or its client hung up (logged there)
            failed = exc
            raise
        except BaseException as exc:
            failed = exc
            log.error("audit export failed after it started", exc_info=exc)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await rows.aclose()
                if failed is None:
                    await stack.aclose()
                else:
                    await stack.__aexit__(type(failed), failed, failed.__traceback__)

    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8"
    return _ExportStream(
        body(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit-export.{fmt}"'},
        send_timeout=settings.export_send_timeout,
        max_seconds=settings.export_max_seconds,
    )


async def _fill(chunk: list[AuditEntry], rows: AsyncIterator[AuditEntry], size: int) -> bool:
    """Add rows to ``chunk`` until it holds ``size``; False when there were no more."""
    async for entry in rows:
        chunk.append(entry)
        if len(chunk) >= size:
            return True
    return False


def _release_export_slot(state: AppState) -> None:
    state.exports -= 1
