"""How the CLI shows results: JSON output, rich tables for a terminal, plain lines for pipes and files.

Every function here takes the client's typed results (:mod:`docnum.models`) and returns text or a rich
renderable; none talks to the database or prints by itself except :func:`print_json`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from docnum.interchange.jsonable import json_item, json_text, json_value
from docnum.models import AuditEntry, CounterStatus, DocumentType, Gap, ImportResult

__all__ = [
    "GAP_HEADER",
    "gap_line",
    "history_lines",
    "history_table",
    "json_item",
    "json_text",
    "json_value",
    "operation_reason",
    "rejected_table",
    "status_table",
    "type_record",
    "type_table",
]


# -- document types -----------------------------------------------------------------------------------------

_TYPE_HIDDEN = ("render_head", "render_tail", "seq_width")


def type_record(document_type: DocumentType) -> dict[str, Any]:
    """A document type as shown to people and in ``--json`` (without the precomputed rendering parts)."""
    shown = dataclasses.asdict(document_type)
    for hidden in _TYPE_HIDDEN:
        shown.pop(hidden)
    return shown


def type_table(document_type: DocumentType) -> Table:
    table = Table(title=f"document type {document_type.code}", show_header=False, title_justify="left")
    for name, value in type_record(document_type).items():
        text = json.dumps(value) if isinstance(value, dict) else "" if value is None else str(value)
        table.add_row(name, escape(text))
    return table


# -- history ------------------------------------------------------------------------------------------------


def operation_reason(entry: AuditEntry) -> str | None:
    """The reason recorded with an operation: in its new values (cancel) or its metadata (void, set...)."""
    for values in (entry.new_value, entry.metadata):
        if isinstance(values, dict) and values.get("reason") is not None:
            return str(values["reason"])
    return None


def _details(entry: AuditEntry) -> str:
    """The new values and metadata of an entry as ``key=value`` pairs, its reason left out (shown apart)."""
    pairs: dict[str, Any] = {}
    for values in (entry.new_value, entry.metadata):
        if isinstance(values, dict):
            pairs.update(values)
        elif values is not None:
            pairs["value"] = values
    pairs.pop("reason", None)
    return " ".join(
        f"{key}={json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value}"
        for key, value in pairs.items()
        if value is not None
    )


def _several_numbers(entries: list[AuditEntry]) -> bool:
    return len({entry.document_number for entry in entries}) > 1


def history_table(entries: list[AuditEntry], *, title: str | None = None, compact: bool = False) -> Table:
    """The audit trail as a table, one row per entry: its reason, then its other values as ``key=value``.

    ``compact`` leaves out the audit id, the application and the date, for narrow summaries.  When the
    entries concern more than one number (a void-and-replace chain), a column names the number of each, in
    place of the application.
    """
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    columns: tuple[str, ...] = (
        ("time", "operation", "actor") if compact else ("id", "time", "operation", "actor", "application")
    )
    if _several_numbers(entries):
        after = columns.index("operation") + 1
        shown = [column for column in columns if column != "application"]  # room for the number
        columns = (*shown[:after], "number", *shown[after:])
    for column in columns:
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_column("details", overflow="fold")
    for entry in entries:
        when = entry.occurred_at.astimezone()
        cells = {
            "id": str(entry.audit_id),
            "time": when.strftime("%H:%M:%S.%f")[:-3] if compact else when.strftime("%Y-%m-%d %H:%M:%S"),
            "operation": entry.operation,
            "number": entry.document_number or "",
            "actor": entry.actor or "",
            "application": entry.application_name or "",
        }
        table.add_row(
            *(escape(cells[column]) for column in columns),
            escape(operation_reason(entry) or ""),
            escape(_details(entry)),
        )
    return table


def history_lines(entries: Iterable[AuditEntry]) -> Iterable[str]:
    """The audit trail for a pipe or a file: one line per entry, nothing cut, fields separated by tabs.

    ``time  operation  number  actor  reason  details``; an empty field is ``-``.
    """
    for entry in entries:
        fields = (
            entry.occurred_at.isoformat(timespec="milliseconds"),
            entry.operation,
            entry.document_number,
            entry.actor,
            operation_reason(entry),
            _details(entry),
        )
        yield "\t".join(" ".join(field.split()) if field else "-" for field in fields)


# -- status ------------------------------------------------------------------------------------------------

_STATES = ("reserved", "confirmed", "cancelled", "expired", "voided", "overridden", "imported")


def _when(moment: datetime | None, empty: str = "") -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment is not None else empty


def status_table(counters: list[CounterStatus]) -> Table:
    """One row per counter; its numbers by state in one cell, a line per state that has any."""
    table = Table(title="counters", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("type", "scope", "period"):
        table.add_column(column, no_wrap=True)
    for column in ("current", "max", "used %"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("numbers", min_width=12)
    table.add_column("last used", min_width=10)
    for counter in counters:
        used = f"{counter.utilisation_pct:.2f}"
        style = "red" if counter.utilisation_pct >= 90 else "yellow" if counter.utilisation_pct >= 75 else ""
        states = "\n".join(f"{getattr(counter, s):,} {s}" for s in _STATES if getattr(counter, s))
        table.add_row(
            escape(counter.document_type),
            escape(counter.scope_value) or "-",
            counter.period or "-",
            f"{counter.current_value:,}",
            f"{counter.max_value:,}",
            f"[{style}]{used}[/{style}]" if style else used,
            states or "none",
            _when(counter.last_used_at, "never"),
        )
    return table


# -- gaps ------------------------------------------------------------------------------------------------

GAP_HEADER = f"{'type':<8} {'scope':<12} {'period':<8} {'values':>27} {'count':>17}  explanation"


def gap_line(gap: Gap) -> str:
    """One range of ``docnum gaps``, a line of its own (the output is streamed, not laid out as a table)."""
    values = str(gap.first_value) if gap.value_count == 1 else f"{gap.first_value}..{gap.last_value}"
    if gap.explained:
        who = ", ".join(part for part in (gap.actor, _when(gap.recorded_at)) if part)
        explanation = escape(
            f"{gap.source}: {gap.reason or 'no reason given'}" + (f" ({who})" if who else "")
        )
    else:
        explanation = "[red]unexplained[/red]"
    return (
        f"{escape(gap.document_type):<8} {escape(gap.scope_value) or '-':<12} {gap.period or '-':<8}"
        f" {values:>27} {gap.value_count:>17,}  {explanation}"
    )


# -- import ------------------------------------------------------------------------------------------------


def rejected_table(rejected_rows: list[tuple[int, ImportResult]]) -> Table:
    """Rejected rows of an import, each with the file line it starts on."""
    table = Table(title="rejected rows", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("line", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("number", overflow="fold")
    table.add_column("reason", overflow="fold")
    for line, result in rejected_rows:
        table.add_row(
            str(line),
            escape(result.document_type or ""),
            escape(result.document_number or ""),
            escape(result.detail or ""),
        )
    return table
