"""The Segment Profile API as a source: list pages of ids, then two calls per profile.

Works for every space, but is paced by the space's rate limit (100 requests/s by
default, ~49.7 profiles/s) and cannot tell what changed, so every run reads everything.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self

from migrator.config import Settings
from migrator.exceptions import InvalidPosition, RequestRejected
from migrator.segment import SegmentClient
from migrator.sources.base import Merge, Page, Profile, ProfileUnreadable

#: Calls per profile at best: traits + external ids + 1/100 of a list call.
CALLS_PER_PROFILE = 2.01
#: Profiles whose reads are in flight per request/s of the limit: enough to keep the
#: limiter busy through ~0.4 s round trips.
IN_FLIGHT_SECONDS = 0.4


class ProfileApiSource:
    name = "profile-api"

    def __init__(self, settings: Settings, *, traits: Sequence[str] | None) -> None:
        rate = settings.segment_rate_limit
        self.concurrency = max(8, min(256, math.ceil(rate * IN_FLIGHT_SECONDS)))
        self.ceiling: float | None = rate / CALLS_PER_PROFILE
        self.client = SegmentClient(settings, connections=self.concurrency * 2)
        self._identifier = settings.identifier
        self._traits = traits

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.__aexit__(*exc_info)

    async def pages(self, start: str | None) -> AsyncIterator[Page]:
        if start is not None and (not start.isprintable() or not start.strip() or " " in start):
            raise InvalidPosition(start, "it is not a Segment list cursor")
        cursor = start
        try:
            async for page in self.client.profile_pages(start):
                yield Page(page.cursor, page.next_cursor, segment_ids=page.segment_ids)
                cursor = page.next_cursor
        except RequestRejected as exc:
            if exc.status != 400 or cursor is None:
                raise
            # The list call has nothing else a 400 could be about: the cursor is refused.
            raise InvalidPosition(cursor, f"Segment refused the cursor ({exc})") from None

    async def read(self, segment_id: str) -> Profile:
        # Both calls at once; one task for the external ids rather than gather's two tasks
        # (gather cost ~2% of the CPU per profile).
        ids = asyncio.create_task(self.client.external_ids(segment_id, [self._identifier]))
        try:
            traits = await self.client.traits(segment_id, self._traits)
            external_ids = await ids
        except RequestRejected as exc:
            # Typically 404: the profile was merged or deleted after it was listed.
            ids.add_done_callback(_ignore_outcome)  # as gather did: it no longer matters
            raise ProfileUnreadable(f"could not read the profile: {exc}") from None
        except BaseException:
            ids.cancel()  # the run is stopping: do not leave the other call behind
            raise
        return Profile(segment_id, traits, external_ids)

    async def merges(self) -> list[Merge]:
        return []  # the Profile API does not say which profiles were merged away

    def watermark(self) -> str | None:
        return None  # no "changed since": every run reads every profile


def _ignore_outcome(task: asyncio.Task[Any]) -> None:
    """Retrieve a task's exception so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
