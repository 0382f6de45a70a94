"""Async client of the Segment Profile API: profile id pages, traits and external ids.

Traits and external ids are paginated; `paginate()` follows the cursor so callers always
get everything, never a first page. The list of profiles is exposed page by page because
the checkpoint is a list cursor.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from migrator.config import Settings
from migrator.http import ApiClient, MalformedResponse
from migrator.limiter import make_limiter

#: The most external ids Segment returns per call.
EXTERNAL_IDS_PAGE = 100


@dataclass(frozen=True)
class ProfilePage:
    """One page of the profile list. `cursor` fetched it (None: the first page)."""

    cursor: str | None
    segment_ids: tuple[str, ...]
    next_cursor: str | None


class CursorPaginator:
    """Reads Segment's `cursor {has_more, next}` and writes `next` into the next request."""

    def __init__(self, start: str | None = None) -> None:
        self.next: str | None = start
        self.has_next_page = True

    def update_state(self, body: Any) -> None:
        cursor = body.get("cursor") or {}
        if not isinstance(cursor, dict):
            raise MalformedResponse("cursor is not an object")
        nxt = cursor.get("next")
        self.has_next_page = bool(cursor.get("has_more")) and bool(nxt)
        if self.has_next_page and nxt == self.next:
            raise MalformedResponse("the cursor did not move")
        self.next = nxt if self.has_next_page else None

    def update_request(self, params: dict[str, str | int]) -> None:
        if self.next:
            params["next"] = self.next
        else:
            params.pop("next", None)


def basic_auth(token: str) -> str:
    """HTTP Basic with the token as user name and an empty password, as Segment asks."""
    return "Basic " + base64.b64encode(f"{token}:".encode()).decode("ascii")


def _segment_error(body: Any) -> tuple[str | None, str | None]:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error.get("code"), error.get("message")
    return None, None


def _expect(key: str, kind: type) -> Any:
    def parse(body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get(key), kind):
            raise MalformedResponse(f"'{key}' missing from the body")
        if not isinstance(body.get("cursor") or {}, dict):
            raise MalformedResponse("'cursor' is not an object")
        return body

    return parse


class SegmentClient(ApiClient):
    """The Profile API of one space, paced under the space's requests per second."""

    def __init__(self, settings: Settings, *, connections: int = 100) -> None:
        super().__init__(
            "segment",
            f"{settings.segment_api_url}/v1/spaces/{quote(settings.segment_space_id, safe='')}"
            "/collections/users/profiles",
            headers={"Authorization": basic_auth(settings.segment_access_token)},
            limiter=make_limiter(settings.segment_rate_limit, 1.0),
            timeout=settings.request_timeout,
            max_attempts=settings.max_attempts,
            connections=connections,
            error_message=_segment_error,
        )
        self.page_size = settings.segment_request_limit
        self.traits_page_size = settings.segment_traits_limit

    async def paginate(
        self,
        path: str,
        params: dict[str, str | int],
        key: str,
        kind: type,
        start: str | None = None,
        urgent: bool = False,
    ) -> AsyncIterator[tuple[str | None, Any, str | None]]:
        """Yield `(cursor that fetched it, body, next cursor)` for every page."""
        paginator = CursorPaginator(start)
        while paginator.has_next_page:
            paginator.update_request(params)
            used = paginator.next
            body = await self.request(
                "GET", path, _expect(key, kind), params=dict(params), urgent=urgent
            )
            paginator.update_state(body)
            yield used, body, paginator.next

    async def profile_pages(self, start: str | None = None) -> AsyncIterator[ProfilePage]:
        """Every page of profile ids, from `start` (a list cursor) on."""
        params: dict[str, str | int] = {"limit": self.page_size}
        # Urgent: every profile task waits on the next page, so it passes their requests.
        async for used, body, nxt in self.paginate("", params, "data", list, start, urgent=True):
            ids = tuple(
                item["segment_id"]
                for item in body["data"]
                if isinstance(item, dict) and isinstance(item.get("segment_id"), str)
            )
            yield ProfilePage(used, ids, nxt)

    async def traits(self, segment_id: str, include: Iterable[str] | None = None) -> dict[str, Any]:
        """All traits of a profile, every page merged in Segment's order."""
        params: dict[str, str | int] = {"limit": self.traits_page_size}
        if include is not None:
            params["include"] = ",".join(include)
        traits: dict[str, Any] = {}
        async for _, body, _ in self.paginate(
            _profile_path(segment_id, "traits"), params, "traits", dict
        ):
            traits.update(body["traits"])
        return traits

    async def external_ids(
        self, segment_id: str, types: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """All external ids of a profile (of `types` only, when given), every page."""
        params: dict[str, str | int] = {"limit": EXTERNAL_IDS_PAGE}
        if types is not None:
            params["include"] = ",".join(types)
        ids: list[dict[str, Any]] = []
        async for _, body, _ in self.paginate(
            _profile_path(segment_id, "external_ids"), params, "data", list
        ):
            ids.extend(item for item in body["data"] if isinstance(item, dict))
        return ids


def _profile_path(segment_id: str, what: str) -> str:
    return f"/segment_id:{quote(segment_id, safe='')}/{what}"
