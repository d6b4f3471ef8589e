#!/usr/bin/env python3
"""Concatenate sql/*.sql (lexical order) into one file, for a migration to run frozen.

    python scripts/freeze_sql.py migrations/versions/0001_core.sql
    python scripts/freeze_sql.py --check migrations/versions/0001_core.sql  # 1: stale

Each file is preceded by a `-- file: NAME` comment and ends with a newline, so a trailing comment in one
file cannot swallow the first statement of the next. Standard library only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEADER = (
    "-- Frozen from sql/*.sql by scripts/freeze_sql.py. Released migrations are immutable: do not edit.\n"
)


def freeze(source: Path) -> str:
    parts = [HEADER]
    for path in sorted(source.glob("*.sql"), key=lambda p: p.name):
        text = path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            text += "\n"
        parts.append(f"\n-- file: {path.name}\n{text}")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output", type=Path, help="file to write, e.g. .../migrations/versions/0001_core.sql")
    parser.add_argument(
        "--sql-dir",
        type=Path,
        default=REPO / "sql",
        help="source directory (default: sql/)",
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the output differs")
    args = parser.parse_args(argv)

    files = sorted(args.sql_dir.glob("*.sql"))
    if not files:
        print(f"warning: no .sql files in {args.sql_dir}", file=sys.stderr)
    frozen = freeze(args.sql_dir)

    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != frozen:
            print(f"{args.output} is not what {args.sql_dir} freezes to", file=sys.stderr)
            return 1
        return 0

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(frozen, encoding="utf-8")
    print(f"wrote {args.output} from {len(files)} file(s): {', '.join(p.name for p in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
