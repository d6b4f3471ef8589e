"""Hints are written once, in neutral words; the argument at fault is named in COLUMN and shown by each
interface in its own terms.

Every HINT in sql/ reads right in psql, in the CLI and over HTTP: it names an operation by what it does ("void
it", "its history") and an argument by its meaning ("the scope value"), never in one interface's syntax (a SQL
call, ``name => value``, NULL, a quoted SQL literal, an argument's SQL identifier, a CLI option). The argument
an error is about travels in COLUMN with its SQL name; the CLI (``docnum.cli.hints``) and the HTTP API
(``docnum.http.errors``) each keep one table of their own names for those arguments, and docs/sql-api.md lists
them. Nothing rewrites a hint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from docnum.cli.hints import PARAMETERS as CLI_NAMES
from docnum.http.errors import PARAMETERS as HTTP_NAMES
from docnum.http.errors import parameter_name

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "sql"

# -- the RAISE statements of sql/, read without a SQL parser ----------------------------------------------


def _statements(text: str) -> list[str]:
    """Every ``RAISE ...;`` statement, up to its semicolon outside quotes."""
    found: list[str] = []
    for match in re.finditer(r"\bRAISE\s+(?:EXCEPTION|WARNING|NOTICE)\b", text):
        quoted, end = False, match.start()
        while end < len(text):
            char = text[end]
            if char == "'":
                quoted = not quoted
            elif char == ";" and not quoted:
                break
            end += 1
        found.append(text[match.start() : end])
    return found


def _options(statement: str) -> dict[str, str]:
    """The USING options of a RAISE, by name (HINT, COLUMN, ERRCODE...), split at commas outside quotes and
    parentheses."""
    if " USING " not in f" {' '.join(statement.split())} ":
        return {}
    using = re.split(r"\bUSING\b", statement, maxsplit=1)[1]
    options: dict[str, str] = {}
    depth, quoted, start = 0, False, 0
    for index, char in enumerate(using + ","):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            name, _, value = using[start:index].partition("=")
            options[name.strip().upper()] = value.strip()
            start = index + 1
    return options


def _literals(expression: str) -> list[str]:
    """The texts of an expression's string literals; literals separated only by a line break are one text
    (SQL's continued string), any other literal (a CASE branch, a format() argument) is its own."""
    texts: list[str] = []
    previous_end = None
    for match in re.finditer(r"'((?:[^']|'')*)'", expression):
        text = match[1].replace("''", "'")
        between = expression[previous_end : match.start()] if previous_end is not None else None
        if between is not None and not between.strip() and "\n" in between:
            texts[-1] += text
        else:
            texts.append(text)
        previous_end = match.end()
    return texts


RAISES = [
    (path.name, statement, _options(statement))
    for path in sorted(ENGINE.glob("*.sql"))
    for statement in _statements(path.read_text(encoding="utf-8"))
]


def _hint_texts(name: str, expression: str) -> list[str]:
    """A hint's texts; a hint held in a constant (``HINT = v_hint``) is read from its declaration."""
    if re.fullmatch(r"[a-z_]+", expression):
        source = (ENGINE / name).read_text(encoding="utf-8")
        declared = re.search(rf"\b{expression}\s+constant\s+text\s*:=\s*((?:'(?:[^']|'')*'\s*)+);", source)
        assert declared, f"{name}: the constant {expression} of a HINT"
        return _literals(declared[1])
    return _literals(expression)


HINTS = [
    (name, text)
    for name, _, options in RAISES
    if "HINT" in options
    for text in _hint_texts(name, options["HINT"])
]

#: What gives a hint away as written for one interface, and why.
INTERFACE_SYNTAX = {
    r"docnum\.": "a SQL function or table",
    r"=>": "a SQL named argument",
    r"\w\(\)": "a call",
    r"\bSELECT\b": "a SQL statement",
    r"(?<![\w-])--\w": "a CLI option",
    r"\bNULL\b": "a SQL value (the CLI and HTTP leave an argument out)",
    r"(?<![\w'])'[^'\s]+'(?![\w'])": "a quoted SQL literal",
    r"\b[a-z]+(?:_[a-z0-9]+)+\b": "an argument's SQL identifier",
}


def test_the_sql_reader_finds_every_hint() -> None:
    written = sum(
        len(re.findall(r"\bHINT\s*=", path.read_text(encoding="utf-8"))) for path in ENGINE.glob("*.sql")
    )
    assert written > 80
    assert sum("HINT" in options for _, _, options in RAISES) == written
    assert ("30_allocation.sql", "Give the token the reservation returned.") in HINTS
    assert (
        "20_format.sql",
        "Tokens: {TYPE} {SCOPE} {YYYY} {YY} {MM} {DD} {SEQ} {SEQ:n}; everything else is literal text.",
    ) in HINTS  # held in a constant
    assert ("15_rules.sql", "Give the %s identifier as the scope value, e.g. PRJ-7.") in HINTS
    # a CASE gives a hint per branch; continued lines are one text
    assert ("30_allocation.sql", "A confirmed number names a document: void it instead.") in HINTS
    assert ("30_allocation.sql", "Its history shows what happened to it.") in HINTS
    assert (
        "30_allocation.sql",
        "Retry; if it persists, find the long or idle transaction that holds this counter: the doctor checks "
        "list such sessions.",
    ) in HINTS


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Pass scope => 'PRJ-7'.", True),
        ("Raise it with docnum.alter_type().", True),
        ("Use --scope.", True),
        ("Pass NULL to omit it.", True),
        ("Raise max_value first.", True),
        ("For example 'UTC'.", True),
        ("Give the scope value, e.g. PRJ-7; the type's default applies.", False),
        ('Give an object such as {"project_code": "P-1"}.', False),
        ("Add {SCOPE}, e.g. {SCOPE}-{SEQ:4}, RFA_2.", False),
    ],
)
def test_the_interface_syntax_rules_tell_one_from_the_other(text: str, found: bool) -> None:
    assert bool(_interface_syntax(text)) is found


def _interface_syntax(text: str) -> list[str]:
    words = re.sub(r'"[^"]*"', '""', text)  # JSON keys and values in an example are the data, not syntax
    return [why for pattern, why in INTERFACE_SYNTAX.items() if re.search(pattern, words)]


def test_every_hint_is_in_neutral_words() -> None:
    offending = [(name, text, _interface_syntax(text)) for name, text in HINTS if _interface_syntax(text)]
    assert not offending, "\n".join(f"{name}: {text!r}: {', '.join(why)}" for name, text, why in offending)


# -- COLUMN names the argument; every interface has its own name for each ----------------------------------


def _columns() -> set[str]:
    """Every argument name an error of sql/ can carry in COLUMN: the literals of COLUMN options, and the names
    the shared checks are given (their p_column/p_name)."""
    names: set[str] = set()
    for _, _, options in RAISES:
        column = options.get("COLUMN", "")
        names.update(text for text in _literals(column))
    text = "\n".join(path.read_text(encoding="utf-8") for path in ENGINE.glob("*.sql"))
    names.update(re.findall(r"docnum\._check_(?:text|metadata)\('([a-z_]+)'", text))
    names.update(re.findall(r"docnum\._check_scope\([^;]*?'([a-z_]+)'\)", text))
    names.update(re.findall(r"p_column text DEFAULT '([a-z_]+)'", text))
    return names


def test_every_nb006_and_nb001_names_its_argument() -> None:
    unnamed = {
        statement.split("'")[1]
        for _, statement, options in RAISES
        if options.get("ERRCODE") in ("'NB006'", "'NB001'") and "COLUMN" not in options
    }
    # the counter trigger's refusal can come from a document date, a period or an imported number
    assert unnamed == {"document type % cannot number a document of %"}


def test_every_argument_sql_names_has_a_name_in_each_interface_and_in_the_docs() -> None:
    columns = _columns()
    assert {"scope", "actor", "document_number", "metadata", "format", "rows"} <= columns
    assert set(CLI_NAMES) == columns, "docnum/cli/hints.py PARAMETERS"
    assert set(HTTP_NAMES) == columns, "docnum/http/errors.py PARAMETERS"
    manual = (ROOT / "docs" / "sql-api.md").read_text(encoding="utf-8")
    listed = manual.split("exactly as the function's", 1)[1].split("A client maps it", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", listed)) == columns, "docs/sql-api.md, the list of COLUMN names"


def test_http_names_the_scope_kind_on_type_routes_and_the_value_elsewhere() -> None:
    assert parameter_name("scope", "/document-numbering/types") == "scope"
    assert parameter_name("scope", "/document-numbering/types/{code}") == "scope"
    assert parameter_name("scope", "/document-numbering/next") == "scope_value"
    assert parameter_name("ttl", "/document-numbering/reserve") == "ttl_seconds"
    assert parameter_name("table_name", "/document-numbering/next") == "table_name"
    assert parameter_name(None, "/document-numbering/next") is None


# -- what each interface shows -------------------------------------------------------------------------------


def test_the_client_keeps_the_hint_and_the_column_as_the_database_sent_them(
    db: psycopg.Connection[Any],
) -> None:
    from docnum.errors import InvalidArgument, translate

    db.execute("SELECT docnum.define_type('RFA', '{SCOPE}/{TYPE}/{SEQ:4}', scope => 'PROJECT')")
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT docnum.next_number('RFA')")
    error = translate(raised.value)
    assert isinstance(error, InvalidArgument)
    assert (
        error.hint
        == raised.value.diag.message_hint
        == "Give the project identifier as the scope value, e.g. PRJ-7."
    )
    assert error.column == raised.value.diag.column_name == "scope"


def test_each_interface_name_is_one_that_interface_really_has() -> None:
    """The tables name real things: every CLI name is an option or argument of some command, every HTTP name
    a body field, a path, query or header parameter of some route, or the token's subject."""
    import typer.main

    from docnum.cli.commands import app as cli
    from docnum.http.app import create_app
    from docnum.http.bodies import ImportBody
    from docnum.http.settings import Settings

    group: Any = typer.main.get_command(cli)
    cli_names: set[str] = set()
    for command in group.commands.values():
        for parameter in command.params:
            cli_names.update(parameter.opts)
            if parameter.param_type_name == "argument":
                cli_names.add(str(parameter.metavar or parameter.name.upper()))
    unknown = {
        column: name for column, name in CLI_NAMES.items() if name is not None and name not in cli_names
    }
    assert not unknown, f"names no docnum command has: {unknown}"

    spec = create_app(Settings(dsn="postgresql:///unused", jwt_secret="x" * 32)).openapi()
    http_names = {"sub"}  # the actor: the token's subject claim
    http_names.update(ImportBody.model_fields)  # the import route reads its body itself (JSON or CSV)
    http_names.update(
        parameter["name"]
        for path in spec["paths"].values()
        for operation in path.values()
        for parameter in operation.get("parameters", [])
    )
    http_names.update(
        name for schema in spec["components"]["schemas"].values() for name in schema.get("properties", {})
    )
    unknown = {
        column: name for column, name in HTTP_NAMES.items() if name is not None and name not in http_names
    }
    assert not unknown, f"names no HTTP route takes: {unknown}"
