"""Helpers for the administration and report tests (`from support.admin_helpers import ...`).

Every call goes through docnum's public functions with named arguments (helpers.call_sql builds the
statement); the superuser-only helpers at the end stand in for what an operator's mistake or a crash would
leave behind, so that the reports have something to find.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from support.helpers import call, call_sql, cancel, expire_reservations, next_number, reserve

Conn = psycopg.Connection[Any]


def call_rows(conn: Conn, function: str, **arguments: Any) -> list[dict[str, Any]]:
    """Call a set-returning docnum.<function> with named arguments; return every row as a dict."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(call_sql(function, arguments), arguments)
        return cur.fetchall()


# --- Administration -------------------------------------------------------------------------------


def override(conn: Conn, document_type: str, document_number: str, **arguments: Any) -> str:
    """docnum.override_number(...); a reason is passed unless the caller gives one (or reason=None)."""
    arguments.setdefault("reason", "test override")
    arguments.update(document_type=document_type, document_number=document_number)
    return str(call(conn, "override_number", **arguments)["override_number"])


def void(conn: Conn, document_number: str, **arguments: Any) -> str:
    arguments.setdefault("reason", "test void")
    return str(call(conn, "void_number", document_number=document_number, **arguments)["void_number"])


def void_and_replace(conn: Conn, document_number: str, **arguments: Any) -> str:
    arguments.setdefault("reason", "test replace")
    row = call(conn, "void_and_replace", document_number=document_number, **arguments)
    return str(row["void_and_replace"])


def set_counter(conn: Conn, document_type: str, value: int | None, **arguments: Any) -> int:
    arguments.setdefault("reason", "test set_counter")
    row = call(conn, "set_counter", document_type=document_type, value=value, **arguments)
    return int(row["set_counter"])


def import_numbers(conn: Conn, rows: Any, **arguments: Any) -> list[dict[str, Any]]:
    """docnum.import_numbers(rows => <JSON>, ...): one result dict per input row, in input order."""
    return call_rows(conn, "import_numbers", rows=Jsonb(rows), **arguments)


def import_row(document_type: str, document_number: str, **fields: Any) -> dict[str, Any]:
    """One element of the import_numbers array."""
    return {"document_type": document_type, "document_number": document_number, **fields}


# --- Reports --------------------------------------------------------------------------------------


def gaps(conn: Conn, **arguments: Any) -> list[dict[str, Any]]:
    return call_rows(conn, "gaps", **arguments)


def gap_values(conn: Conn, **arguments: Any) -> dict[int, str | None]:
    """gaps(...) as {value: source} (its ranges spelled out), source None for an unexplained value."""
    return {
        value: row["source"]
        for row in gaps(conn, **arguments)
        for value in range(row["first_value"], row["last_value"] + 1)
    }


def validate(conn: Conn) -> list[dict[str, Any]]:
    return call_rows(conn, "validate")


def findings(conn: Conn) -> set[tuple[str, str]]:
    """validate() reduced to its (check_name, severity) pairs."""
    return {(row["check_name"], row["severity"]) for row in validate(conn)}


def history(conn: Conn, document_number: str) -> list[tuple[str, str]]:
    """number_history(...) as (operation, document_number) pairs, in the order returned."""
    rows = call_rows(conn, "number_history", document_number=document_number)
    return [(row["operation"], row["document_number"]) for row in rows]


# --- What the database holds ----------------------------------------------------------------------


def scalar(conn: Conn, query: str, params: Any = None) -> Any:
    """The single value a query returns."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]


def counter_value(conn: Conn, document_type: str, scope: str = "", period: str = "") -> int | None:
    """current_value of one counter, None when the counter does not exist."""
    row = conn.execute(
        "SELECT current_value FROM docnum.counter"
        " WHERE document_type = %s AND scope_value = %s AND period = %s",
        (document_type, scope, period),
    ).fetchone()
    return None if row is None else int(row[0])


def ledger_row(conn: Conn, document_number: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM docnum.ledger WHERE document_number = %s", (document_number,))
        row = cur.fetchone()
    assert row is not None, f"{document_number} is not in the ledger"
    return row


def state_of(conn: Conn, document_number: str) -> str:
    return str(ledger_row(conn, document_number)["state"])


def states_by_value(conn: Conn, document_type: str, scope: str = "", period: str = "") -> dict[int, str]:
    """{sequence_value: state} of one counter."""
    rows = conn.execute(
        "SELECT l.sequence_value, l.state FROM docnum.ledger l JOIN docnum.counter c USING (counter_id)"
        " WHERE c.document_type = %s AND c.scope_value = %s AND c.period = %s",
        (document_type, scope, period),
    ).fetchall()
    return {int(value): str(state) for value, state in rows}


def last_audit(conn: Conn, operation: str) -> dict[str, Any]:
    """The newest audit row of one operation."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM docnum.audit_trail WHERE operation = %s ORDER BY audit_id DESC LIMIT 1",
            (operation,),
        )
        row = cur.fetchone()
    assert row is not None, f"no {operation} audit row"
    return row


# --- Numbers in every state -----------------------------------------------------------------------


def force_expiry(conn: Conn, token: uuid.UUID) -> None:
    """Move a reservation's expiry into the past (superuser), so the next sweep expires it."""
    conn.execute(
        "UPDATE docnum.ledger SET expires_at = issued_at + interval '1 microsecond' WHERE token = %s",
        (token,),
    )


def number_in_state(conn: Conn, document_type: str, state: str, render: Callable[[int], str]) -> str:
    """Issue a number of the GLOBAL type `document_type` and bring it to `state` through the public API.

    `render(value)` is the type's template applied to a value; `overridden` and `imported` numbers take the
    value the counter would give next.
    """
    if state == "reserved":
        return str(reserve(conn, document_type)["document_number"])
    if state == "cancelled":
        return cancel(conn, reserve(conn, document_type)["token"], reason="not needed")
    if state == "expired":
        reservation = reserve(conn, document_type)
        force_expiry(conn, reservation["token"])
        assert expire_reservations(conn) == 1
        return str(reservation["document_number"])
    if state == "confirmed":
        return next_number(conn, document_type)
    if state == "voided":
        return void(conn, next_number(conn, document_type))
    number = render((counter_value(conn, document_type) or 0) + 1)
    if state == "overridden":
        return override(conn, document_type, number)
    if state == "imported":
        (result,) = import_numbers(conn, [import_row(document_type, number)])
        assert result["status"] == "imported", result
        return number
    raise ValueError(f"unknown state {state}")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.timezone.utc)
