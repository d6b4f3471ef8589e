"""The server log of ``docnum serve``: only printable text in it, and one line per event.

* :class:`Printable` escapes what a client sent that a terminal or a log collector would take for something
  else (a NUL, other control characters, a lone surrogate) in every record: a request path, a header or a
  value quoted in a message reaches the log as ``\\x00``, never raw.
* :class:`QuietAbandoned` drops uvicorn's "Exception in ASGI application" record for a response this server
  stopped on purpose (:class:`docnum.http.errors.ResponseAbandoned`): it was logged once already, at INFO.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from docnum.http.errors import ResponseAbandoned

__all__ = ["Printable", "QuietAbandoned", "printable"]

_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with control characters (but TAB and newline) and lone surrogates written as escapes."""
    return _UNPRINTABLE.sub(_escape, text)


def _clean(value: Any) -> Any:
    return printable(value) if isinstance(value, str) else value


class Printable(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = printable(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _clean(value) for key, value in record.args.items()}
        if record.exc_info and not record.exc_text:  # a traceback quotes what exceptions hold
            record.exc_text = printable(logging.Formatter().formatException(record.exc_info))
        return True


class QuietAbandoned(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseAbandoned))
