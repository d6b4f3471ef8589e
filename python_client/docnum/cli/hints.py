"""The CLI's names for the arguments the database names in an error's COLUMN field.

The database writes each HINT once, in neutral words that read the same in psql, here and over HTTP ("leave
the scope value out", "void it instead"), and names the argument at fault in COLUMN with its SQL name
(``scope``).  The CLI prints the hint as written and names the argument as its own option or argument
(``option: --scope``, ``argument: TYPE``).  Nothing is rewritten.  ``tests/sql/test_hints.py`` fails when
the SQL names an argument this table does not know, or writes a hint in one interface's syntax.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PARAMETERS", "parameter_label"]

#: SQL argument (an error's COLUMN) -> the CLI's option (``--...``) or argument (upper case) that carries it;
#: None for an argument no command passes (SQL-only functions), which is then shown by its SQL name.
PARAMETERS: dict[str, str | None] = {
    "document_type": "TYPE",
    "code": "TYPE",
    "format": "FORMAT",
    "document_number": "NUMBER",
    "token": "TOKEN",
    "value": "VALUE",
    "count": "COUNT",
    "rows": "FILE.csv",
    "scope": "--scope",
    "reset": "--reset",
    "period": "--period",
    "actor": "--actor",
    "reason": "--reason",
    "document_ref": "--ref",
    "document_date": "--date",
    "ttl": "--ttl",
    "reservation_ttl": "--ttl",
    "lock_timeout": "--lock-timeout",
    "time_zone": "--time-zone",
    "max_value": "--max-value",
    "metadata": "--metadata",
    "skip_validation": "--skip-validation",
    "allow_manual_override": "--allow-override",
    "request_id": None,
    "max_scopes": None,
    "table_name": None,
    "number_column": None,
}


def parameter_label(column: str | None, command: Any = None) -> str | None:
    """The CLI's name for the argument an error names in COLUMN: the running command's own option or
    argument of that name when it has one (``audit-export --type``), else the table's (``scope`` ->
    ``--scope``, ``code`` -> ``TYPE``); an argument no command passes keeps its SQL name."""
    if not column:
        return None
    for parameter in getattr(command, "params", ()):  # the running command's (a typer/click Command)
        if parameter.name == column and parameter.opts:
            if parameter.param_type_name == "argument":
                return str(parameter.metavar or parameter.name.upper())
            return str(max(parameter.opts, key=len))
    return PARAMETERS.get(column) or column
