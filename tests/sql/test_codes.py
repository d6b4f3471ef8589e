"""One table of error codes (docnum/codes.py): the SQL raises exactly its codes, the client has a class for
each, the HTTP service answers with its statuses, and the manuals' tables are made from it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import docnum
from docnum import errors
from docnum.codes import CODES, by_code
from docnum.http.errors import NB_STATUS

ROOT = Path(__file__).resolve().parents[2]


def _raised_codes() -> set[str]:
    files = [*(ROOT / "sql").glob("*.sql"), *(ROOT / "migrations").glob("*.sql")]
    return {
        code for path in files for code in re.findall(r"ERRCODE\s*=\s*'(NB\d{3})'", path.read_text("utf-8"))
    }


def test_the_sql_raises_exactly_the_codes_of_the_table() -> None:
    assert _raised_codes() == {row.code for row in CODES}
    assert [row.code for row in CODES] == sorted(row.code for row in CODES)


def test_every_code_has_its_exception_class_and_http_answer() -> None:
    for row in CODES:
        cls = getattr(errors, row.exception)
        assert (
            issubclass(cls, docnum.DocnumError)
            and cls.default_code == row.code
            and errors.ERRORS[row.code] is cls
        ), row
        assert getattr(docnum, row.exception) is cls  # exported by the package
        assert (NB_STATUS[row.code].status, NB_STATUS[row.code].title) == (row.http_status, row.title)
        assert NB_STATUS[row.code].retry_after == row.retry_after
        assert 400 <= row.http_status < 600 and row.meaning and not row.meaning.endswith(".")
    classes = {
        cls.__name__
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.DocnumError) and cls is not errors.DocnumError
    }
    assert classes == {row.exception for row in CODES}
    assert by_code("NB999") is None and by_code("NB001") is CODES[0]


def test_the_manuals_error_tables_are_made_from_the_table() -> None:
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts" / "docs_tables.py")
    assert spec is not None and spec.loader is not None
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    assert tables.stale() == [], "run scripts/docs_tables.py"
    for row in CODES:
        assert f"| {row.code} | `{row.exception}` |" in (ROOT / "docs" / "sql-api.md").read_text("utf-8")
        assert f"| {row.code} | {row.title} |" in (ROOT / "docs" / "http-api.md").read_text("utf-8")
    # the README does not keep a copy; it links to the table
    assert "| NB001" not in (ROOT / "README.md").read_text("utf-8")
