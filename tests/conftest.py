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
