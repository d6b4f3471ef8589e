"""uvicorn's httptools protocol with a bound on the request head: see :mod:`docnum.http.limits`."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from docnum.http.limits import HEAD_LIMIT

__all__ = ["BoundedHttpToolsProtocol"]

_HEAD_PROBLEM = (
    b'{"type":"about:blank","title":"Request Header Fields Too Large","status":431,'
    b'"detail":"the request line and headers hold more than %d bytes","success":false}'
)
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/problem+json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head longer than :data:`HEAD_LIMIT` bytes (431).

    The parser keeps a header it has not finished in memory, so the bytes are counted as they are fed, from
    the start of a request until its head is complete (the chunk that completes it is not counted: it may
    carry the start of the body).
    """

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not getattr(self, "_in_head", False) or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > HEAD_LIMIT:
            body = _HEAD_PROBLEM % HEAD_LIMIT
            self.logger.info("refused a request head of more than %d bytes (431)", HEAD_LIMIT)
            self.transport.write(_HEAD_TOO_LARGE % (len(body), body))
            self.transport.close()
            self._in_head = False
