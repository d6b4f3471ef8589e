"""The sync client is generated from the async one: the committed file must be what the script writes now.

No database here: scripts/async_to_sync.py is regenerated in memory and compared with the file on disk.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from support.helpers import in_ci

ROOT = Path(__file__).resolve().parents[2]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("async_to_sync", ROOT / "scripts" / "async_to_sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async_to_sync = _load_script()
# ruff (the dev extra) formats the generated file; under CI, which installs it, a missing ruff fails.
needs_ruff = pytest.mark.skipif(
    not in_ci() and not (Path(sys.executable).parent / "ruff").exists() and shutil.which("ruff") is None,
    reason="ruff (the dev extra) formats the generated file",
)


@needs_ruff
def test_sync_client_is_up_to_date() -> None:
    committed = async_to_sync.TARGET.read_text()
    assert committed == async_to_sync.generate(), (
        "python_client/docnum/_client_sync.py is stale: edit _client_async.py, then run"
        " .venv/bin/python scripts/async_to_sync.py"
    )


def test_translation_rules() -> None:
    source = textwrap.dedent('''\
        import asyncio
        from collections.abc import AsyncGenerator
        from contextlib import asynccontextmanager


        class AsyncNumbering:
            """Use ``async with AsyncNumbering()``, then ``await thing.aclose()``."""

            @asynccontextmanager
            async def held(self, conn: psycopg.AsyncConnection[Any]) -> AsyncGenerator[int, None]:
                async with conn.transaction():
                    await asyncio.sleep(0)
                    async for row in await conn.execute("SELECT 1"):
                        yield row[0]
    ''')
    assert async_to_sync.translate(source) == async_to_sync.HEADER + textwrap.dedent('''\
        import time
        from collections.abc import Generator
        from contextlib import contextmanager


        class Numbering:
            """Use ``with Numbering()``, then ``thing.close()``."""

            @contextmanager
            def held(self, conn: psycopg.Connection[Any]) -> Generator[int, None, None]:
                with conn.transaction():
                    time.sleep(0)
                    for row in conn.execute("SELECT 1"):
                        yield row[0]
    ''')


def test_a_sync_marker_replaces_the_statement_above_it() -> None:
    source = textwrap.dedent("""\
        async def wait() -> None:
            await asyncio.sleep(1)
            # sync: pass  # nothing to wait for
            return None
    """)
    assert async_to_sync.translate(source) == async_to_sync.HEADER + textwrap.dedent("""\
        def wait() -> None:
            pass  # nothing to wait for
            return None
    """)


@pytest.mark.parametrize(
    ("construct", "message"),
    [
        ("[x async for x in rows()]", "an async comprehension"),
        ("asyncio.gather(a(), b())", "'asyncio.gather' has no sync counterpart"),
    ],
)
def test_what_has_no_mechanical_translation_is_refused(construct: str, message: str) -> None:
    with pytest.raises(async_to_sync.Untranslatable, match=message):
        async_to_sync.translate(f"async def f() -> None:\n    return {construct}\n")
