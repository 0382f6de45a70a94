"""A real Postgres server for the tests, started and stopped by the tests themselves.

The server is the sandbox's (`migrator_sandbox.warehouse.Postgres`: the `pgserver` wheel,
installed by `pip install -e ".[test]"`, so CI needs nothing else; it listens on a unix
socket in a temporary directory only). Each test takes a fresh database from it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from migrator.sources.profiles_sync import engine_url
from migrator_sandbox.warehouse import Postgres as SandboxPostgres

_names = itertools.count(1)


class Postgres:
    def __init__(self, server: SandboxPostgres, directory: Path) -> None:
        self.dir = directory
        self.admin = create_engine(engine_url(server.url), isolation_level="AUTOCOMMIT")

    def url(self, database: str) -> str:
        """The URL a user would give PROFILES_SYNC_URL (libpq form, the socket directory)."""
        return f"postgresql://postgres:@/{database}?host={self.dir}"

    def database(self) -> tuple[str, Engine]:
        """A fresh, empty database: its user-facing URL and an engine for the test."""
        name = f"warehouse_{next(_names)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = self.url(name)
        return url, create_engine(engine_url(url))


def postgres_server() -> Iterator[Postgres]:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(SandboxPostgres.serve())
        assert server.directory is not None
        postgres = Postgres(server, server.directory)
        stack.callback(postgres.admin.dispose)
        yield postgres
