"""Hints in the CLI's language: the one table from SQL function and argument names to docnum commands.

The database writes its hints for SQL (``docnum.void_number()``, ``scope => 'PRJ-7'``).  When the CLI shows
an error, :func:`to_cli` rewrites them: a function with a command becomes that command, its named arguments
become options (``scope =>`` -> ``--scope``); a function without a command stays SQL, introduced by
"in SQL:".  :func:`parameter_label` names the option or argument for an error's COLUMN field.
"""

from __future__ import annotations

import re

__all__ = ["COMMANDS", "PARAMETERS", "parameter_label", "to_cli"]

#: SQL function (schema docnum) -> the docnum command that calls it; None: no command, SQL only.
COMMANDS: dict[str, str | None] = {
    "define_type": "define-type",
    "alter_type": "alter-type",
    "reserve_number": "reserve",
    "confirm_number": "confirm",
    "cancel_number": "cancel",
    "next_number": "next",
    "expire_reservations": "expire",
    "number_history": "history",
    "override_number": "override",
    "void_number": "void",
    "void_and_replace": "replace",
    "set_counter": "set",
    "import_numbers": "import",
    "status": "status",
    "gaps": "gaps",
    "check_duplicates": "check-duplicates",
    "validate": "validate",
    "audit_export": "audit-export",
    "find_request": None,
    "register_document_table": None,
}

#: SQL argument name -> the option or argument of the commands (options start with --).
PARAMETERS: dict[str, str] = {
    "document_type": "TYPE",
    "code": "TYPE",
    "format": "FORMAT",
    "document_number": "NUMBER",
    "token": "TOKEN",
    "value": "VALUE",
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
}

#: Boolean arguments whose SQL ``name => false`` has a --no- form.
_NEGATABLE = frozenset({"allow_manual_override"})

_CALL = re.compile(r"(?:SELECT\s+(?:\*\s+FROM\s+)?)?docnum\.(?P<function>[a-z_]+)\((?P<arguments>[^()]*)\)")
_NAMED = re.compile(r"\b(?P<name>[a-z_]+)\s*=>\s*")
_ARGUMENT = re.compile(r"^(?:(?P<name>[a-z_]+)\s*=>\s*)?(?P<value>.*)$", re.DOTALL)


#: Prose that tells to leave an argument out: "Omit scope for this type.", "Pass NULL to omit actor."
_OMIT = re.compile(r"\b(?P<verb>[Oo]mit) (?P<name>[a-z_]+)\b")
_OMIT_NULL = re.compile(r"\bPass NULL to omit (?P<name>[a-z_]+)\b")


def _label(name: str) -> str:
    return PARAMETERS.get(name, name)


def parameter_label(column: str | None) -> str | None:
    """The CLI's name for a SQL argument (an error's COLUMN field): ``scope`` -> ``--scope``."""
    if not column:
        return None
    return PARAMETERS.get(column, f"--{column.replace('_', '-')}")


def _split_arguments(text: str) -> list[str]:
    """Top-level comma-separated arguments, quotes respected (``'a, b', x => 1`` is two)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == "'":
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def _cli_value(value: str) -> str:
    """A SQL literal as a shell word: ``interval '10 minutes'`` -> ``'10 minutes'``, ``'COR'`` -> ``COR``."""
    value = re.sub(r"^interval\s+", "", value.strip())
    if re.fullmatch(r"'[A-Za-z0-9_./:-]*'", value):
        return value[1:-1]
    return value


def _option(name: str, value: str) -> str:
    label = PARAMETERS.get(name, f"--{name.replace('_', '-')}")
    if not label.startswith("--"):
        return _cli_value(value)
    if value.strip().lower() == "true" and (name in _NEGATABLE or name == "skip_validation"):
        return label
    if value.strip().lower() == "false" and name in _NEGATABLE:
        return "--no-" + label[2:]
    return f"{label} {_cli_value(value)}"


def _command(match: re.Match[str]) -> str:
    function, arguments = match["function"], match["arguments"].strip()
    if function not in COMMANDS or COMMANDS[function] is None:
        return f"in SQL: {match[0]}"
    words = [f"docnum {COMMANDS[function]}"]
    for argument in _split_arguments(arguments):
        parsed = _ARGUMENT.match(argument)
        if parsed is None:  # pragma: no cover - the pattern matches any text
            continue
        name, value = parsed["name"], parsed["value"]
        words.append(_option(name, value) if name else _cli_value(value))
    return " ".join(words)


def _argument(match: re.Match[str]) -> str:
    name = match["name"]
    label = PARAMETERS.get(name)
    if label is None:
        return match[0]
    return label + " " if label.startswith("--") else label + " = "


def to_cli(hint: str | None) -> str | None:
    """A database hint in the CLI's words: calls of docnum functions become commands, ``name =>`` options."""
    if not hint:
        return hint
    text = _CALL.sub(_command, hint)
    # Named arguments outside a call ("Pass reason => '...'"), but not inside a call kept as SQL.
    pieces = re.split(r"(in SQL: [^\n]*?docnum\.[a-z_]+\([^()]*\))", text)
    converted = []
    for index, piece in enumerate(pieces):
        if index % 2:
            converted.append(piece)
            continue
        piece = _NAMED.sub(_argument, piece)
        piece = _OMIT_NULL.sub(lambda m: f"Leave out {_label(m['name'])}", piece)
        piece = _OMIT.sub(lambda m: f"{m['verb']} {_label(m['name'])}", piece)
        piece = re.sub(r"(--[a-z-]+) interval '", r"\1 '", piece)
        piece = re.sub(r"(--skip-validation|--allow-override) true\b", r"\1", piece)
        converted.append(piece)
    return "".join(converted)
