"""Every query the Profiles Sync source runs, in SQLAlchemy Core, readable top to bottom.

Written once for every warehouse Profiles Sync supports (Postgres, Snowflake, BigQuery,
Redshift, Databricks): plain SELECTs, DISTINCT, IN, ORDER BY, LIMIT and MAX, nothing
dialect-specific. One exception, `traits_json_of`, is a faster form of `traits_of` for
Postgres 16 and later; every other warehouse (and an older Postgres) reads the portable
rows. The three views are Segment's materialized views (docs/contracts.md):

    user_traits(canonical_segment_id, name, value, seq, received_at, uuid_ts, timestamp)
    user_identifiers(canonical_segment_id, type, value, seq, received_at, uuid_ts, timestamp)
    profile_merges(canonical_segment_id, segment_id, seq, received_at, uuid_ts, timestamp)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    MetaData,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by, distinct_on

#: The columns each view must have, for the schema check.
VIEW_COLUMNS: dict[str, tuple[str, ...]] = {
    "user_traits": ("canonical_segment_id", "name", "value", "seq", "received_at", "uuid_ts"),
    "user_identifiers": (
        "canonical_segment_id",
        "type",
        "value",
        "seq",
        "received_at",
        "uuid_ts",
    ),
    "profile_merges": ("canonical_segment_id", "segment_id", "seq", "received_at", "uuid_ts"),
}


def _timestamps() -> list[Column[datetime]]:
    return [
        Column("received_at", DateTime(timezone=True)),
        Column("uuid_ts", DateTime(timezone=True)),
        Column("timestamp", DateTime(timezone=True)),
    ]


@dataclass(frozen=True)
class Views:
    """The three views of one schema."""

    traits: Table
    identifiers: Table
    merges: Table


def views(schema: str) -> Views:
    meta = MetaData(schema=schema)
    traits = Table(
        "user_traits",
        meta,
        Column("canonical_segment_id", Text),
        Column("name", Text),
        Column("value", Text),
        Column("seq", BigInteger),
        *_timestamps(),
    )
    identifiers = Table(
        "user_identifiers",
        meta,
        Column("canonical_segment_id", Text),
        Column("type", Text),
        Column("value", Text),
        Column("seq", BigInteger),
        *_timestamps(),
    )
    merges = Table(
        "profile_merges",
        meta,
        Column("canonical_segment_id", Text),
        Column("segment_id", Text),
        Column("seq", BigInteger),
        *_timestamps(),
    )
    return Views(traits, identifiers, merges)


# -- which profiles ----------------------------------------------------------------------------


def profile_ids(v: Views, *, since: bool, limit: int) -> list[Select[str]]:
    """Per view, the next `limit` profile ids after `:after` (`''`: from the first).

    The next page is the first `limit` of their union. A profile is any id with a trait
    or an identifier (one with identifiers and no traits is still a customer). With
    `since`, only ids with a row loaded after `:since` in any view, merges included: a
    merge re-adds the survivor's rows, so it is read again. One query per view rather than
    a UNION: each walks its index in order and stops after `limit` ids, where a UNION
    sorts every remaining row on every page.
    """
    queries = []
    for table in (v.traits, v.identifiers, *((v.merges,) if since else ())):
        column = table.c.canonical_segment_id
        query = select(column).distinct().where(column > bindparam("after"))
        if since:
            query = query.where(table.c.uuid_ts > bindparam("since"))
        queries.append(query.order_by(column).limit(limit))
    return queries


# -- whole profiles ----------------------------------------------------------------------------


def _of_page(column: Column[str], ranged: bool) -> ColumnElement[bool]:
    """The rows of one page's profiles: a range (`:after`, `:last`] when the page holds
    every id in it (a backfill: one index range scan, two parameters), else `:ids`."""
    if ranged:
        return and_(column > bindparam("after"), column <= bindparam("last"))
    return column.in_(bindparam("ids", expanding=True))


def _trait_rows(v: Views, names: Sequence[str] | None) -> Select[str, str, str | None]:
    t = v.traits
    query = select(t.c.canonical_segment_id, t.c.name, t.c.value)
    if names is not None:
        query = query.where(t.c.name.in_(list(names)))
    return query


def traits_of(
    v: Views, names: Sequence[str] | None, *, ranged: bool
) -> Select[str, str, str | None]:
    """Every trait row of a page's profiles, in no order.

    No ORDER BY: sorting a page's rows by (seq, received_at) was most of the server's work
    (Postgres, 2,000 profiles of all traits: 80 ms sorted, 12 ms not). A trait has one row
    almost always; the reader spots a name seen twice and reads those few profiles again
    with `traits_in_order`.
    """
    return _trait_rows(v, names).where(_of_page(v.traits.c.canonical_segment_id, ranged))


def traits_in_order(v: Views, names: Sequence[str] | None) -> Select[str, str, str | None]:
    """The trait rows of the profiles `:ids`, the latest row of a trait last (by seq, then
    received_at), so that it wins when read in order."""
    t = v.traits
    query = _trait_rows(v, names).where(_of_page(t.c.canonical_segment_id, ranged=False))
    return query.order_by(t.c.seq, t.c.received_at)


def _decodes(value: ColumnElement[str | None]) -> ColumnElement[bool]:
    """Whether the decoding rule reads the text as JSON: `true`/`false`, or an object or
    array (first and last character) that parses (Postgres 16: `pg_input_is_valid`).

    LIKE on a literal pattern rather than `left()`/`right()`: those build a new text per
    row, and `right()` counts the characters of the whole value first."""
    return and_(
        value.is_not(None),
        or_(
            value.in_(["true", "false"]),
            and_(
                or_(value.like("{%"), value.like("[%")),
                or_(value.like("%}"), value.like("%]")),
                func.pg_input_is_valid(value, literal("json")),
            ),
        ),
    )


def _traits_per_profile(
    v: Views, names: Sequence[str] | None, of_page: ColumnElement[bool], *, long: bool = False
) -> Select[Any]:
    """`(id, texts, decoded, rows)` per profile: two JSON objects of its traits, the text
    values and the values the rule decodes (either may be null: none), and how many trait
    rows it has (more rows than keys: a name in several rows, read again in order). With
    `long`, also whether a decoded value holds a run of 19 digits (a number past 64 bits,
    which only Python's JSON decoder reads exactly).

    Shaped for the server's CPU, one page of 2,000 profiles measured with callgrind (~358
    -> ~251 M instructions for `page_body_json`, BENCHMARKS.md, Stop 13): the rule is
    evaluated once per row, in a subquery that OFFSET 0 keeps from being merged into this
    one (merged, each use evaluated it again); two aggregates with FILTER rather than a
    CASE with `to_json`, which looks its argument's type up in the catalog on every row;
    and profiles grouped under the "C" collation, byte order, where the database's own
    (C.UTF-8 here, en_US elsewhere) calls strcoll on every comparison of the sort.
    Grouping asks only for equality, which is the same under either; the page's order
    comes from its ids.
    """
    t = v.traits
    rows = select(
        t.c.canonical_segment_id.collate("C").label("id"),
        t.c.name,
        t.c.value,
        _decodes(t.c.value).label("decodes"),
    ).where(of_page, t.c.name.is_not(None))
    if names is not None:
        rows = rows.where(t.c.name.in_(list(names)))
    r = rows.offset(0).subquery("r")
    columns = [
        r.c.id,
        func.json_object_agg(r.c.name, r.c.value).filter(~r.c.decodes).label("texts"),
        func.json_object_agg(r.c.name, cast(r.c.value, JSON)).filter(r.c.decodes).label("decoded"),
        func.count().label("rows"),
    ]
    if long:
        digits = and_(r.c.decodes, r.c.value.regexp_match("[0-9]{19}"))
        columns.append(func.bool_or(digits).label("long"))
    return select(*columns).group_by(r.c.id)


def traits_json_of(v: Views, names: Sequence[str] | None, *, ranged: bool) -> Select[str | None]:
    """Postgres 16 and later: a page's traits as one JSON text, an array of `[id, texts,
    decoded, rows]` (`_traits_per_profile`).

    The database applies the decoding rule, so the reader parses one JSON text per page
    instead of handling ~7-26 rows a profile and decoding each value in Python. Measured
    on 100,000 profiles' standard traits: 0.6 s of client CPU against 1.1 s for the rows
    with a text per profile, and one text per page halved the parsing again (12-15 ms a
    page against 22).
    """
    p = _traits_per_profile(v, names, _of_page(v.traits.c.canonical_segment_id, ranged))
    return select(cast(func.json_agg(_profile_array(p.subquery("p"))), Text))


def _profile_array(p: Any) -> ColumnElement[Any]:
    return func.json_build_array(p.c.id, p.c.texts, p.c.decoded, p.c.rows)


def page_ids_json(v: Views, *, limit: int) -> Select[Any]:
    """Postgres 16 and later: the `limit` profile ids after `:after`, in order, as one JSON
    array: the bounds of a backfill page (`:after`, last id], read from the indexes alone
    (~25 ms a page here), so that the page's body (`page_body_json`) can be built while
    the previous one is still being read. Typed `json`, not text: the source's engine
    hands a `json` value over as the bytes the database sent (`ProfilesSyncSource`)."""
    # UNION ALL then GROUP BY: the two ordered index scans are merged, not hashed and
    # sorted again (callgrind: 81 -> 70 M instructions a page).
    ids = union_all(*(_next_ids(t, limit) for t in (v.traits, v.identifiers))).subquery("u")
    page = select(ids.c.id).group_by(ids.c.id).order_by(ids.c.id).limit(limit).subquery("page_ids")
    return select(func.json_agg(aggregate_order_by(page.c.id, page.c.id), type_=JSON))


def page_body_json(v: Views, names: Sequence[str] | None) -> Select[Any]:
    """Postgres 16 and later: the body of the backfill page (`:after`, `:last`] in one
    statement and one `json` value (as `page_ids_json`), `[long, traits, first]`: whether
    any decoded value holds 19 digits in a row (`_traits_per_profile`), `traits_json_of`'s
    array, and `{id: [value, received_at, seen]}`, each profile's first identifier of type
    `:type` (earliest `received_at`, then `seq`, then value, as `identifiers_of`'s reader
    picks it) and its `seen_key`.

    Against `traits_json_of` and `identifiers_of` (identifier rows decoded by SQLAlchemy
    and chosen in Python), the reader thread's CPU for 100,000 profiles went from ~1.7 s
    to ~0.8 s (measured with psycopg alone).
    """
    of_page = _of_page(v.traits.c.canonical_segment_id, True)
    t = _traits_per_profile(v, names, of_page, long=True).subquery("t")
    i = v.identifiers
    profile = i.c.canonical_segment_id.collate("C")  # byte order: see `_traits_per_profile`
    epoch = func.extract("epoch", i.c.received_at)
    first = (
        select(profile.label("id"), i.c.value, i.c.received_at, epoch.label("epoch"))
        .ext(distinct_on(profile))
        .where(_of_page(i.c.canonical_segment_id, True), i.c.type == bindparam("type"))
        .where(i.c.value.is_not(None))
        .order_by(
            profile,
            i.c.received_at.is_(None),
            i.c.received_at,
            func.coalesce(i.c.seq, 0),
            i.c.value.collate("C"),  # code point order, as Python compares the values
        )
        .subquery()
    )
    pairs = func.json_build_array(first.c.value, first.c.received_at, seen_key(first.c.epoch))
    firsts = select(func.json_object_agg(first.c.id, pairs)).scalar_subquery()
    # One pass over the profiles: the flag and the array from the same aggregate.
    body = func.json_build_array(
        func.coalesce(func.bool_or(t.c.long), False), func.json_agg(_profile_array(t)), firsts
    )
    return select(type_coerce(body, JSON)).select_from(t)


#: Seconds since 1970 of 0002-01-01 and 9999-01-01 (UTC): between them, an instant is
#: within Python's years 1 to 9999 in any time zone the database writes it in.
_SEEN_FROM, _SEEN_UNTIL = -62104060800, 253370764800


def seen_key(epoch: ColumnElement[Any]) -> ColumnElement[Any]:
    """Postgres 14 and later: `identity.seen_key` of an identifier received at `epoch`
    (`extract(epoch from received_at)`, exact to the microsecond), null outside the years
    it is computed for here, and for an unknown time, where Python computes it.

    The owner of each source_id is stored with this key; computed by Python from the
    timestamp's text it was 2.1 µs of every profile in a backfill (timeit), ~9% of the
    event loop thread's instructions in a dry run (callgrind). `test_profiles_sync`
    checks it against Python's for any instant and session time zone.
    """
    micros = cast(epoch * 1_000_000, BigInteger) + 10**18
    key = literal("0") + func.lpad(cast(micros, Text), 20, "0") + literal(".")
    inside = and_(
        epoch >= literal(_SEEN_FROM, BigInteger), epoch < literal(_SEEN_UNTIL, BigInteger)
    )
    return case((inside, key), else_=None)


def _next_ids(table: Table, limit: int) -> Select[str]:
    column = table.c.canonical_segment_id
    return (
        select(column.label("id"))
        .distinct()
        .where(column > bindparam("after"))
        .order_by(column)
        .limit(limit)
    )


def identifiers_of(v: Views, *, ranged: bool) -> Select[str, str, int | None, datetime | None]:
    """The identifier rows of type `:type` of a page's profiles."""
    i = v.identifiers
    return select(i.c.canonical_segment_id, i.c.value, i.c.seq, i.c.received_at).where(
        _of_page(i.c.canonical_segment_id, ranged), i.c.type == bindparam("type")
    )


# -- merges and the watermark ----------------------------------------------------------------


def merges_since(v: Views, *, since: bool) -> Select[str, str]:
    """Profiles merged away (`segment_id` no longer canonical), after `:since` if given."""
    m = v.merges
    query = select(m.c.segment_id, m.c.canonical_segment_id).where(
        m.c.segment_id != m.c.canonical_segment_id
    )
    if since:
        query = query.where(m.c.uuid_ts > bindparam("since"))
    return query.order_by(m.c.segment_id)


def watermark(v: Views) -> Select[datetime | None]:
    """The newest `uuid_ts` of the three views: what the next incremental run reads after."""
    newest = union(
        *(select(func.max(t.c.uuid_ts).label("ts")) for t in (v.traits, v.identifiers, v.merges))
    ).subquery("newest")
    return select(func.max(newest.c.ts))
