#!/usr/bin/env python3
"""Write the tables of the manuals that are made from the code: today, the error codes (docnum/codes.py).

    python scripts/docs_tables.py          # rewrite the tables in docs/
    python scripts/docs_tables.py --check  # exit 1 when a table is stale (tests/sql/test_codes.py runs this)

A table lives between `<!-- begin: NAME ... -->` and `<!-- end: NAME -->` in a manual; everything between the
two lines is replaced.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "python_client"))

from docnum.codes import CODES  # noqa: E402


def _http(status: int, retry_after: int | None) -> str:
    return f"{status}, `Retry-After: {retry_after}`" if retry_after is not None else str(status)


def sql_codes() -> str:
    rows = ["| code | Python class | HTTP | raised when |", "|---|---|---|---|"]
    rows += [
        f"| {c.code} | `{c.exception}` | {_http(c.http_status, c.retry_after)} | {c.meaning} |" for c in CODES
    ]
    return "\n".join(rows)


def http_codes() -> str:
    rows = ["| code | title | HTTP |", "|---|---|---|"]
    rows += [f"| {c.code} | {c.title} | {_http(c.http_status, c.retry_after)} |" for c in CODES]
    return "\n".join(rows)


#: (manual, table name) -> what writes the table
TABLES: dict[tuple[str, str], Callable[[], str]] = {
    ("docs/sql-api.md", "error codes"): sql_codes,
    ("docs/http-api.md", "error codes"): http_codes,
}


def render(text: str, name: str, table: str) -> str:
    pattern = re.compile(
        rf"(<!-- begin: {re.escape(name)}\b[^\n]*-->\n).*?(<!-- end: {re.escape(name)} -->)", re.DOTALL
    )
    if not pattern.search(text):
        raise SystemExit(f"no <!-- begin: {name} --> ... <!-- end: {name} --> markers")
    return pattern.sub(lambda m: m[1] + table + "\n" + m[2], text, count=1)


def stale() -> list[str]:
    """The manuals whose tables differ from what the code makes."""
    out = []
    for (manual, name), make in TABLES.items():
        text = (REPO / manual).read_text(encoding="utf-8")
        if render(text, name, make()) != text:
            out.append(f"{manual}: {name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only report stale tables (exit 1)")
    args = parser.parse_args(argv)
    if args.check:
        found = stale()
        for line in found:
            print(f"stale: {line} (run scripts/docs_tables.py)")
        return 1 if found else 0
    for (manual, name), make in TABLES.items():
        path = REPO / manual
        text = path.read_text(encoding="utf-8")
        path.write_text(render(text, name, make()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
