"""Segment Profiles Sync as a source: the profile views in the customer's warehouse.

No API limit: the run is bounded by Voucherify. And `uuid_ts` says what changed, so after
the first run (the backfill) a run reads only the profiles with a row loaded since the
last completed run, less a safety overlap: an unchanged space reads almost nothing.

Positions (the checkpoint) are JSON: the mode, the window (`since`, so a resumed run reads
the same set even if the watermark has moved) and the last settled canonical_segment_id.
Profiles are read in keyset pages ordered by canonical_segment_id, never a table at once.

Trait values are text in the views. The decoding rule (docs/profiles-sync.md,
`profiles_sync_decode`): a value that is a JSON object or array is decoded; `true` and
`false` become booleans; everything else, numbers included, stays text. Numbers as text
lose nothing for the customer fields, which are all strings, and Voucherify's schema check
turns "34" into 34 where a key is a number. A trait with several rows: the latest (by seq,
then received_at) wins.

The engine is synchronous SQLAlchemy (psycopg for Postgres); each query runs in a worker
thread so the event loop keeps sending and confirming meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Self

from sqlalchemy import Connection, Engine, Select, create_engine, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from migrator.exceptions import ConfigError, InvalidPosition, SourceUnavailable
from migrator.sources import profiles_sync_decode as decoding
from migrator.sources import profiles_sync_sql as sql
from migrator.sources.base import Merge, Page, Profile, ProfileUnreadable

#: Profiles per keyset page: few round trips, bounded memory (~20 trait rows each).
PAGE_SIZE = 2000
#: A backfill's first page holds this share of a page (`_bodies_ahead`); each next one
#: twice as many, up to the page size.
FIRST_PAGE_SHARE = 8
#: Backfill pages whose body the database builds at once (`_bodies_ahead`), on Postgres 16.
READ_AHEAD = 2
#: `work_mem` of the statement that builds a page's body (`_page_body`).
SORT_MEMORY = "32MB"


def _engine_options(url: URL) -> dict[str, Any]:
    """On Postgres, a `json` value (a backfill page's ids and body) comes as the UTF-8
    bytes sent: orjson reads them at once, where text is decoded into a str first and
    encoded again for the parser (~4.5 ms of a 2,000-profile page, measured)."""
    if url.get_backend_name() != "postgresql":
        return {}
    return {"json_deserializer": _as_sent, "connect_args": {"client_encoding": "utf8"}}


def _as_sent(value: bytes) -> bytes:
    return value


def engine_url(url: str) -> str:
    """Postgres URLs use psycopg 3; any other dialect's URL is passed through."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


class ProfilesSyncSource:
    name = "profiles-sync"
    concurrency = 1  # profiles arrive complete: nothing to read one by one
    ceiling: float | None = None

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        identifier: str,
        traits: Sequence[str] | None,
        watermark: str | None,
        full: bool,
        overlap_seconds: float = 3600.0,
        page_size: int = PAGE_SIZE,
        secrets: Sequence[str] = (),
    ) -> None:
        self._url = url
        self._schema = schema
        self._identifier = identifier
        self._traits_wanted = None if traits is None else tuple(traits)
        self._since = (
            None
            if full or watermark is None
            else (datetime.fromisoformat(watermark) - timedelta(seconds=overlap_seconds))
        )
        self._page_size = page_size
        self._secrets = tuple(s for s in secrets if s)
        self._views = sql.views(schema)
        self._made = self._make_engine()
        self._engine: Engine | None = None
        #: Whether the database decodes the traits (`sql.traits_json_of`): Postgres 16+.
        self._json_traits = False
        self._ids_queries: dict[int, Select[str | None]] = {}
        self._body_query: Select[str | None] | None = None
        self._watermark: datetime | None = None
        self._window: datetime | None = self._since

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self._open)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._engine is not None:
            await asyncio.to_thread(self._engine.dispose)
            self._engine = None

    def _make_engine(self) -> Engine:
        """The engine, its dialect and driver loaded (it connects later, in `_open`).

        Built with the source, before the run starts: a URL SQLAlchemy cannot read or a
        warehouse whose driver is not installed is one line and exit 2, with no run
        recorded, not a traceback when the run connects. Loading the driver is also the
        source's slowest step before its first query (~0.1 s for psycopg, an import).
        """
        try:
            url = make_url(engine_url(self._url))
            return create_engine(url, pool_pre_ping=True, **_engine_options(url))
        except ImportError as exc:
            raise ConfigError(
                f"PROFILES_SYNC_URL needs the Python package {exc.name or exc}, which is not "
                "installed: install your warehouse's extra (docs/profiles-sync.md)"
            ) from None
        except NoSuchModuleError as exc:
            raise ConfigError(
                f"PROFILES_SYNC_URL is not usable: {self._scrub(exc)} (is your warehouse's "
                "extra installed? docs/profiles-sync.md)"
            ) from None
        except (ArgumentError, ValueError) as exc:
            raise ConfigError(f"PROFILES_SYNC_URL is not usable: {self._scrub(exc)}") from None

    def _open(self) -> None:
        """Connect, check the views, and note the watermark this run will leave behind."""
        self._engine = self._made
        where = self._made.url.render_as_string(hide_password=True)
        try:
            with self._engine.connect() as conn:
                self._check_views(conn)
                self._watermark = conn.execute(sql.watermark(self._views)).scalar()
                dialect = conn.dialect
                self._json_traits = dialect.name == "postgresql" and (
                    dialect.server_version_info or (0,)
                ) >= (16,)
        except ConfigError:
            raise
        except SQLAlchemyError as exc:
            raise ConfigError(f"cannot read Profiles Sync at {where}: {self._scrub(exc)}") from None

    def _check_views(self, conn: Any) -> None:
        inspector = inspect(conn)
        if not inspector.has_schema(self._schema):
            raise ConfigError(
                f"PROFILES_SYNC_SCHEMA={self._schema}: no such schema in the warehouse"
            )
        for view, needed in sql.VIEW_COLUMNS.items():
            try:
                columns = {c["name"].lower() for c in inspector.get_columns(view, self._schema)}
            except SQLAlchemyError:
                columns = set()
            if not columns:
                raise ConfigError(
                    f"Profiles Sync view {self._schema}.{view} is missing: expected Segment's "
                    "materialized views user_traits, user_identifiers and profile_merges"
                )
            missing = [c for c in needed if c not in columns]
            if missing:
                raise ConfigError(
                    f"Profiles Sync view {self._schema}.{view} lacks column(s) {', '.join(missing)}"
                )

    def _scrub(self, exc: BaseException) -> str:
        """The driver's first line, without the password (it can echo the URL)."""
        orig = getattr(exc, "orig", None) or exc
        text = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    # -- reading --------------------------------------------------------------------------

    async def pages(self, start: str | None) -> AsyncIterator[Page]:
        since, after = self._window, ""
        if start is not None:
            # A resumed run keeps its window and its watermark: rows loaded while it was
            # stopped, for profiles behind its position, are read by the next run.
            since, until, after = self._decode_position(start)
            self._window, self._watermark = since, until
        if since is None and self._json_traits:
            read = self._bodies_ahead(after)
        else:
            read = self._pages_in_turn(since, after)
        position = start
        async for ids, profiles, done in read:
            nxt = None if done else self._encode_position(since, self._watermark, ids[-1])
            yield Page(position, nxt, profiles=profiles)
            if done:
                return
            position = nxt

    async def _pages_in_turn(
        self, since: datetime | None, after: str
    ) -> AsyncIterator[tuple[list[str], tuple[Profile, ...], bool]]:
        while True:
            ids, profiles = await asyncio.to_thread(self._page, since, after)
            if not ids:
                return
            yield ids, profiles, len(ids) < self._page_size
            after = ids[-1]

    async def _bodies_ahead(
        self, after: str
    ) -> AsyncIterator[tuple[list[str], tuple[Profile, ...], bool]]:
        """A backfill on Postgres 16: each page's ids first (`sql.page_ids_json`, from the
        indexes), then its body (`sql.page_body_json`), `READ_AHEAD` bodies at once, each
        on its own connection: the database builds the next pages while this one is
        decoded and mapped. One page at a time, the reader waited on the database for a
        third of a 100,000-profile dry run (measured on a busy two-core host).

        The first pages are smaller (an eighth of a page, then twice as many each time up
        to the page size): mapping starts once a small page is built, not a full one, and
        the database builds the larger ones meanwhile. In a 100,000-profile dry run the
        first profiles came ~0.13 s sooner (0.20-0.27 -> 0.09-0.11 s after the run's start),
        and the pipeline waited 0.28-0.60 -> 0.09-0.22 s in all for pages."""
        ahead: deque[tuple[list[str], asyncio.Future[tuple[Profile, ...]], bool]] = deque()
        last = False
        limit = max(self._page_size // FIRST_PAGE_SHARE, 1)
        try:
            while True:
                while not last and len(ahead) < READ_AHEAD:
                    ids = await asyncio.to_thread(self._page_ids, after, limit)
                    last = len(ids) < limit
                    if ids:
                        body = asyncio.to_thread(self._page_body, after, ids)
                        ahead.append((ids, asyncio.ensure_future(body), last))
                        after = ids[-1]
                    limit = min(limit * 2, self._page_size)
                if not ahead:
                    return
                ids, building, done = ahead.popleft()
                yield ids, await building, done
        finally:
            for _, building, _ in ahead:
                building.cancel()
            await asyncio.gather(*(b for _, b, _ in ahead), return_exceptions=True)

    def _page(self, since: datetime | None, after: str) -> tuple[list[str], tuple[Profile, ...]]:
        assert self._engine is not None, "use the source as `async with`"
        v = self._views
        try:
            with self._engine.connect() as conn:
                found: set[str] = set()
                params = {"after": after, "since": since}
                for query in sql.profile_ids(v, since=since is not None, limit=self._page_size):
                    found.update(conn.execute(query, params).scalars().all())
                ids = sorted(found)[: self._page_size]
                if not ids:
                    return [], ()
                # A backfill page holds every id in its range; an incremental one does not.
                ranged = since is None
                page: dict[str, Any] = {"type": self._identifier}
                page.update({"after": after, "last": ids[-1]} if ranged else {"ids": ids})
                traits = self._traits(conn, ids, page, ranged)
                idents = conn.execute(sql.identifiers_of(v, ranged=ranged), page).all()
                first = decoding.first_identifiers(idents)
                return ids, decoding.profiles(ids, traits, first, self._identifier)
        except DBAPIError as exc:
            raise SourceUnavailable(f"profiles-sync: {self._scrub(exc)}") from None

    def _page_ids(self, after: str, limit: int) -> list[str]:
        assert self._engine is not None, "use the source as `async with`"
        # Built once per size: ~1.6 ms a page to build them again.
        if limit not in self._ids_queries:
            self._ids_queries[limit] = sql.page_ids_json(self._views, limit=limit)
        if self._body_query is None:
            self._body_query = sql.page_body_json(self._views, self._traits_wanted)
        try:
            with self._engine.connect() as conn:
                query = self._ids_queries[limit]
                ids: list[str] = decoding.page_json(
                    conn.execute(query, {"after": after}).scalar() or b"[]"
                )
                return ids
        except DBAPIError as exc:
            raise SourceUnavailable(f"profiles-sync: {self._scrub(exc)}") from None

    def _page_body(self, after: str, ids: list[str]) -> tuple[Profile, ...]:
        """The profiles of the page (`after`, `ids[-1]`]: one statement, one JSON text."""
        assert self._engine is not None and self._body_query is not None
        params = {"after": after, "last": ids[-1], "type": self._identifier}
        try:
            with self._engine.connect() as conn:
                # A page's trait rows (~50,000 with every trait) are sorted by profile: in
                # memory, not in temporary files (4 MB, the default, spilled to disk;
                # 199-221 -> 175-188 ms a page here, measured on a busy host).
                conn.exec_driver_sql(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
                body = conn.execute(self._body_query, params).scalar()
                _, traits, first = decoding.page_json(body or b"[false, null, null]")
                by_id: dict[str, dict[str, Any]] = {i: {} for i in ids}
                self._read_again(conn, by_id, decoding.traits_from_json(traits or (), by_id))
        except DBAPIError as exc:
            raise SourceUnavailable(f"profiles-sync: {self._scrub(exc)}") from None
        return decoding.profiles(ids, by_id, first or {}, self._identifier)

    def _traits(
        self, conn: Connection, ids: list[str], page: dict[str, Any], ranged: bool
    ) -> dict[str, dict[str, Any]]:
        """The decoded traits of a page's profiles, by id ({} for a profile without any).

        Read without ORDER BY (see `sql.traits_of`): a profile with a name in several rows,
        the rare case where their order decides, is read again in order.
        """
        by_id: dict[str, dict[str, Any]] = {i: {} for i in ids}
        if self._json_traits:
            as_json = sql.traits_json_of(self._views, self._traits_wanted, ranged=ranged)
            decoded = json.loads(conn.execute(as_json, page).scalar() or "[]")
            again = decoding.traits_from_json(decoded, by_id)
        else:
            as_rows = sql.traits_of(self._views, self._traits_wanted, ranged=ranged)
            again = decoding.traits_from_rows(conn.execute(as_rows, page).all(), by_id)
        self._read_again(conn, by_id, again)
        return by_id

    def _read_again(self, conn: Connection, by_id: dict[str, Any], ids: list[str]) -> None:
        """The traits of profiles with a name in several rows, read in order."""
        if ids:
            ordered = sql.traits_in_order(self._views, self._traits_wanted)
            decoding.apply_in_order(by_id, conn.execute(ordered, {"ids": ids}).all())

    async def read(self, segment_id: str) -> Profile:
        def one() -> Profile | None:
            assert self._engine is not None
            v = self._views
            try:
                with self._engine.connect() as conn:
                    one = {"ids": [segment_id], "type": self._identifier}
                    by_id: dict[str, dict[str, Any]] = {segment_id: {}}
                    traits = conn.execute(sql.traits_in_order(v, self._traits_wanted), one)
                    trait_rows = traits.all()
                    decoding.apply_in_order(by_id, trait_rows)
                    ident_rows = conn.execute(sql.identifiers_of(v, ranged=False), one).all()
            except DBAPIError as exc:
                raise SourceUnavailable(f"profiles-sync: {self._scrub(exc)}") from None
            if not trait_rows and not ident_rows:
                return None
            first = decoding.first_identifiers(ident_rows)
            return decoding.profiles([segment_id], by_id, first, self._identifier)[0]

        found = await asyncio.to_thread(one)
        if found is None:
            raise ProfileUnreadable("the profile is no longer in the Profiles Sync views")
        return found

    async def merges(self) -> list[Merge]:
        def query() -> list[Merge]:
            assert self._engine is not None
            since = self._window
            stmt = sql.merges_since(self._views, since=since is not None)
            try:
                with self._engine.connect() as conn:
                    return [Merge(a, b) for a, b in conn.execute(stmt, {"since": since})]
            except DBAPIError as exc:
                raise SourceUnavailable(f"profiles-sync: {self._scrub(exc)}") from None

        return await asyncio.to_thread(query)

    def watermark(self) -> str | None:
        return None if self._watermark is None else self._watermark.isoformat()

    # -- positions ------------------------------------------------------------------------

    @staticmethod
    def _encode_position(since: datetime | None, until: datetime | None, after: str) -> str:
        return json.dumps(
            {
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
                "after": after,
            },
            separators=(",", ":"),
        )

    @staticmethod
    def _decode_position(position: str) -> tuple[datetime | None, datetime | None, str]:
        try:
            data = json.loads(position)
            since, until = (
                None if data[key] is None else datetime.fromisoformat(data[key])
                for key in ("since", "until")
            )
            return since, until, str(data["after"])
        except (ValueError, TypeError, KeyError):
            raise InvalidPosition(position, "it is not a Profiles Sync position") from None
