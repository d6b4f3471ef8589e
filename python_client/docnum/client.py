"""The docnum client: one method per SQL function of docs/sql-api.md, one statement per method.

:class:`Numbering` works with a ``psycopg.Connection`` or a ``psycopg_pool.ConnectionPool``;
:class:`AsyncNumbering` with their async counterparts.  Both build the same ``Call`` (statement,
parameters, result shape) from the same functions and differ only in how they wait for the database.
``audit_export`` and ``iter_gaps`` do not fetch everything at once: they build a ``Stream`` and read its
rows lazily through a server-side cursor (see :meth:`Numbering.audit_export`).

Where the code lives
    ``calls.py`` holds what both flavours run (the statements, their parameters and result shapes,
    the retry policy); ``_client_async.py`` holds :class:`AsyncNumbering`, the one written by hand; and
    ``_client_sync.py``, :class:`Numbering`, is generated from it by ``scripts/async_to_sync.py`` (edit the
    async file, then run the script; ``tests/client/test_client_generated.py`` fails while they disagree).
    This module only gathers the public names.

Transactions
    With a pool, or with a connection that is idle, the client owns the transaction: it runs the statement
    in ``conn.transaction()``, which commits on success.  Only then does it retry a serialization failure
    (40001) or a deadlock (40P01), a few times with a short jittered backoff: the transaction rolled back as
    a whole, so running it again is safe.  With a connection already inside a transaction the statement
    joins the caller's transaction; nothing is committed and nothing is retried.  No other error is ever
    retried, and the client never makes up a number: every number comes from the database.

Connection poolers
    The client works unchanged behind PgBouncer (or any pooler) in transaction pooling mode.  It keeps no
    session state: no ``SET``, no session-level advisory lock, no temporary table, no ``LISTEN``; the
    server-side cursor of ``audit_export`` lives inside a transaction.  And it never prepares a statement on
    the server (``execute(..., prepare=False)``): a prepared statement belongs to the server connection that
    ran it, which a transaction pooler hands to another client next, so psycopg's automatic preparation fails
    there with ``prepared statement "_pg3_0" already exists`` (or "does not exist").  Each statement is one
    function call whose planning costs nothing measurable; the functions' own queries are cached by PL/pgSQL
    whatever the protocol.  Statements of your own on the same connections are your psycopg settings' affair:
    create those connections or pools with ``prepare_threshold=None``
    (see docs/install.md, "Behind a connection pooler").
"""

from __future__ import annotations

from docnum._client_async import AsyncNumbering, AsyncReservationHandle
from docnum._client_sync import Numbering, ReservationHandle

# Public constants of the former single-module client, re-exported for callers that used them.
from docnum.calls import DEFAULT_ATTEMPTS as DEFAULT_ATTEMPTS
from docnum.calls import DEFAULT_FETCH_SIZE as DEFAULT_FETCH_SIZE
from docnum.calls import RELEASED_WITHOUT_CONFIRM as RELEASED_WITHOUT_CONFIRM
from docnum.calls import RETRYABLE_SQLSTATES as RETRYABLE_SQLSTATES
from docnum.calls import Interval as Interval
from docnum.calls import Token as Token

__all__ = ["AsyncNumbering", "AsyncReservationHandle", "Numbering", "ReservationHandle"]
