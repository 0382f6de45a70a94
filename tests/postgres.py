"""A real Postgres server for the tests, started and stopped by the tests themselves.

The `pgserver` wheel ships the Postgres binaries (installed by `pip install -e ".[test]"`,
so CI needs nothing else); it runs the server as a non-root user when the tests run as
root. The server listens on a unix socket in a temporary directory only.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

_names = itertools.count(1)


class Postgres:
    def __init__(self) -> None:
        import pgserver  # the wheel's import is slow: only when a test needs a server

        self.dir = Path(tempfile.mkdtemp(prefix="migrator-pg-"))
        self.server: Any = pgserver.get_server(self.dir, cleanup_mode="delete")
        self.admin = create_engine(self._url("postgres"), isolation_level="AUTOCOMMIT")

    def _url(self, database: str) -> str:
        # libpq form: the unix socket directory as ?host=
        return f"postgresql+psycopg://postgres:@/{database}?host={self.dir}"

    def url(self, database: str) -> str:
        """The URL a user would give PROFILES_SYNC_URL (no driver named)."""
        return f"postgresql://postgres:@/{database}?host={self.dir}"

    def database(self) -> tuple[str, Engine]:
        """A fresh, empty database: its user-facing URL and an engine for the test."""
        name = f"warehouse_{next(_names)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return self.url(name), create_engine(self._url(name))

    def stop(self) -> None:
        self.admin.dispose()
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def postgres_server() -> Iterator[Postgres]:
    server = Postgres()
    try:
        yield server
    finally:
        server.stop()
