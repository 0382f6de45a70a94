"""The seam between a source of profiles and the pipeline.

A source yields `Page`s in a stable order. A page is the unit of resumption: once every
profile on it is settled (confirmed, listed, unchanged or in the ledger) the checkpoint
moves to its `next_position`, an opaque string only the source can read back. A page
either names profiles to `read()` one by one (the Profile API, where each read costs API
calls and runs concurrently) or carries them complete (a warehouse, where one query
returns many profiles at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self


@dataclass(slots=True)  # not frozen: built once per profile, 0.7 -> 0.3 µs (measured)
class Profile:
    """One complete profile: every trait, and the external ids that may hold its source_id.

    `external_ids` have the Profile API's shape (`{"type", "id", "created_at"}`) so that one
    rule (`mapping.select_source_id`) picks the identifier whatever the source.
    """

    segment_id: str
    traits: Mapping[str, Any]
    external_ids: Sequence[Mapping[str, Any]]
    #: `identity.seen_key` of its one external id, when the source had the database
    #: compute it (Profiles Sync on Postgres 16); None: computed from `external_ids`.
    seen: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One resumable step. `position` re-reads this page; `next_position` is where a run
    resumes once the page is settled (None: nothing after it)."""

    position: str | None
    next_position: str | None
    segment_ids: tuple[str, ...] = ()
    profiles: tuple[Profile, ...] = ()

    def __len__(self) -> int:
        return len(self.segment_ids) + len(self.profiles)


@dataclass(frozen=True, slots=True)
class Merge:
    """`segment_id` was merged into `canonical_segment_id` (Profiles Sync's profile_merges)."""

    segment_id: str
    canonical_segment_id: str


class ProfileUnreadable(Exception):
    """This one profile cannot be read (merged or deleted since it was listed): it goes to
    the failure ledger; the run goes on."""


class Source(Protocol):
    """What the pipeline needs from a source. Sources are `async with` objects."""

    #: "profile-api" or "profiles-sync": stored with the checkpoint and the watermark.
    name: str
    #: How many `read()`s are worth running at once.
    concurrency: int
    #: Profiles per second the source can deliver at most (None: no API limit).
    ceiling: float | None

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    def pages(self, start: str | None) -> AsyncIterator[Page]:
        """Every page from `start` (a `next_position` given earlier; None: the beginning).

        Raises `InvalidPosition` when `start` does not decode or the source refuses it:
        a usage error (exit 2) that leaves the checkpoint as it was."""
        ...

    async def read(self, segment_id: str) -> Profile:
        """One profile named by a page's `segment_ids`; raises `ProfileUnreadable`."""
        ...

    async def merges(self) -> list[Merge]:
        """Profiles merged away within what this run read (empty where unknown)."""
        ...

    def watermark(self) -> str | None:
        """What the next run starts after, once this one completes (None: always read all)."""
        ...


async def after_first(
    first: asyncio.Future[Page | None], pages: AsyncIterator[Page]
) -> AsyncIterator[Page]:
    """The page `first` read ahead (None: there was none), then the rest of `pages`."""
    page = await first
    if page is None:
        return
    yield page
    async for page in pages:
        yield page
