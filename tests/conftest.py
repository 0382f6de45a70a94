"""Fixtures shared by the client tests."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` aiohttp 3.14 needs."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mock(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, patched to build responses the installed aiohttp accepts."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", CompatResponse)
    with aioresponses() as m:
        yield m


@pytest.fixture
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without sleeping: the policy is tested in test_http, not the clock."""
    from migrator import http

    monkeypatch.setattr(http, "_wait", lambda state: 0.0)


# -- the sandbox, end to end ---------------------------------------------------------------

#: Fast settings for end-to-end tests: no rate limits to wait on, quick async actions.
FAST_ENV = {"SEGMENT_RATE_LIMIT": "100000", "VOUCHERIFY_RATE_LIMIT": "600000", "MAX_ATTEMPTS": "8"}


def sandbox_settings(**knobs: Any) -> Any:
    """SandboxSettings for tests: unlimited, quick, bodies recorded for schema checks."""
    from migrator_sandbox.settings import SandboxSettings

    defaults: dict[str, Any] = {
        "profiles": 300,
        "segment_rate": 0,
        "voucherify_rate": 0,
        "async_delay": 0.05,
        "record_bodies": True,
    }
    return SandboxSettings(**(defaults | knobs))


@pytest.fixture
def make_sandbox() -> Iterator[Any]:
    """Start sandboxes on free ports (`make_sandbox(profiles=..., knob=...)`); all stopped after."""
    from migrator_sandbox.server import ThreadedSandbox

    started: list[ThreadedSandbox] = []

    def start(**knobs: Any) -> ThreadedSandbox:
        sandbox = ThreadedSandbox(sandbox_settings(**knobs)).start()
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(make_sandbox: Any) -> Any:
    """A default sandbox of 300 profiles on a free port."""
    return make_sandbox()


# -- a real Postgres (Profiles Sync) ------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One Postgres server for the session; each test takes its own database from it."""
    from tests.postgres import postgres_server

    yield from postgres_server()
