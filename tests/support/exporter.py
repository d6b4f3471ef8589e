"""`docnum metrics` as a running process, for the tests that scrape it over HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from docnum.ops import embedded

STARTUP_TIMEOUT = 30


class Exporter:
    """Starts ``python -m docnum metrics --port 0 ...`` against `dsn` and learns the port it bound."""

    def __init__(self, dsn: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "docnum", "metrics", "--host", "127.0.0.1", "--port", "0", *args],
            env={**os.environ, embedded.DSN_ENV: dsn},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr_lines: list[str] = []
        found = threading.Event()
        self.port = 0

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.stderr_lines.append(line)
                match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
                if match:
                    self.port = int(match.group(1))
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(STARTUP_TIMEOUT):
            self.stop()
            raise RuntimeError(f"docnum metrics did not start: {''.join(self.stderr_lines)}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def scrape_text(self) -> str:
        response = httpx.get(self.url, timeout=10)
        response.raise_for_status()
        return response.text

    def validated(self) -> None:
        """Wait (polling, at most STARTUP_TIMEOUT) until the first background validation has ended: its
        series (unexplained gaps, integrity findings) exist only from then on."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "numbering_validation_timestamp_seconds" not in self.scrape_text():
            assert time.monotonic() < deadline, "no background validation ended"
            time.sleep(0.05)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample, parsed by prometheus-client: {(sample name, sorted labels): value}."""
        return samples(self.scrape_text())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(STARTUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(STARTUP_TIMEOUT)

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def families(text: str) -> dict[str, Any]:
    """{family name: its type} as prometheus-client parses them (counters without their _total)."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def sample_names(text: str) -> Iterator[str]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name
