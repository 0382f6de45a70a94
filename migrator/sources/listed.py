"""A given list of profiles, read through another source (`retry-failed`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Self

from migrator.sources.base import Merge, Page, Profile, Source

PAGE_SIZE = 100


class ListedSource:
    def __init__(self, inner: Source, segment_ids: Sequence[str]) -> None:
        self.inner = inner
        self.name = inner.name
        self.concurrency = inner.concurrency
        self.ceiling = inner.ceiling
        self._segment_ids = segment_ids

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.inner.__aexit__(*exc_info)

    async def pages(self, start: str | None) -> AsyncIterator[Page]:
        ids = self._segment_ids
        for i in range(0, len(ids), PAGE_SIZE):
            yield Page(None, None, segment_ids=tuple(ids[i : i + PAGE_SIZE]))

    async def read(self, segment_id: str) -> Profile:
        return await self.inner.read(segment_id)

    async def merges(self) -> list[Merge]:
        return []

    def watermark(self) -> str | None:
        return None
