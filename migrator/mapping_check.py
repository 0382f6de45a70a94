"""`migrator mapping check`: what the mapping and Voucherify's schema would do to a sample.

Reads a sample of profiles from the configured source and the live metadata schema, maps
each profile, fits its metadata to the schema as a run would (every customer taken as new,
the strictest case: required keys must be present), and counts per target field. Nothing
is sent.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from migrator.config import RunOptions, Settings
from migrator.mapping import map_profile
from migrator.runner import make_source
from migrator.schema import MetadataSchema, apply_schema
from migrator.sources import Profile, ProfileUnreadable, Source
from migrator.voucherify import VoucherifyClient

#: Why a field's value was dropped, where it is not its type.
DROP_REASONS = {"birthdate": "not an ISO 8601 date"}


@dataclass
class FieldTally:
    filled: int = 0
    coerced: int = 0
    dropped: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "filled": self.filled,
            "coerced": self.coerced,
            "dropped": self.dropped,
            "would_be_rejected": self.rejected,
            "why": dict(self.reasons.most_common()),
        }


@dataclass
class MappingCheck:
    profiles: int = 0
    unreadable: int = 0
    no_identifier: int = 0
    customers: int = 0
    rejected_customers: int = 0
    schema: bool = False
    fields: dict[str, FieldTally] = field(default_factory=dict)

    def tally(self, name: str) -> FieldTally:
        found = self.fields.get(name)
        if found is None:
            found = self.fields[name] = FieldTally()
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "profiles": self.profiles,
            "unreadable": self.unreadable,
            "no_identifier": self.no_identifier,
            "customers": self.customers,
            "would_be_rejected": self.rejected_customers,
            "schema_checked": self.schema,
            "fields": {name: t.as_dict() for name, t in self.fields.items()},
        }


async def check_mapping(settings: Settings, options: RunOptions, sample: int) -> MappingCheck:
    source = make_source(settings, options)
    async with source, VoucherifyClient(settings) as voucherify:
        try:
            schema = MetadataSchema.from_body(await voucherify.customer_metadata_schema())
        except ValueError:
            schema = None
        profiles, unreadable = await _sample(source, sample)
    check = MappingCheck(profiles=len(profiles) + unreadable, unreadable=unreadable)
    check.schema = schema is not None and schema.checks_anything
    for profile in profiles:
        _check_one(check, profile, settings, options, schema if check.schema else None)
    return check


async def _sample(source: Source, sample: int) -> tuple[list[Profile], int]:
    """The first `sample` profiles in the source's order (the Profile API's reads run
    concurrently under the source's own bound)."""
    ids: list[str] = []
    profiles: list[Profile] = []
    async for page in source.pages(None):
        profiles.extend(page.profiles)
        ids.extend(page.segment_ids)
        if len(profiles) + len(ids) >= sample:
            break
    profiles = profiles[:sample]
    ids = ids[: sample - len(profiles)]
    bound = asyncio.Semaphore(source.concurrency)

    async def read(segment_id: str) -> Profile | None:
        async with bound:
            try:
                return await source.read(segment_id)
            except ProfileUnreadable:
                return None

    read_ = await asyncio.gather(*(read(i) for i in ids))
    profiles.extend(p for p in read_ if p is not None)
    return profiles, sum(p is None for p in read_)


def _check_one(
    check: MappingCheck,
    profile: Profile,
    settings: Settings,
    options: RunOptions,
    schema: MetadataSchema | None,
) -> None:
    mapped = map_profile(
        profile.segment_id,
        profile.traits,
        profile.external_ids,
        identifier=settings.identifier,
        metadata_mode=options.mode,
        spec=options.mapping,
    )
    for name in mapped.dropped:
        tally = check.tally(name)
        tally.dropped += 1
        tally.reasons[DROP_REASONS.get(name, "a value of a type it cannot take")] += 1
    if mapped.refused is not None:
        check.rejected_customers += 1
        check.tally("(mapping)").reasons[mapped.refused] += 1
        check.tally("(mapping)").rejected += 1
        return
    customer = mapped.customer
    if customer is None:
        check.no_identifier += 1
        return
    check.customers += 1
    for name, value in customer.items():
        if name == "address":
            for key in value:
                check.tally(f"address.{key}").filled += 1
        elif name not in ("source_id", "metadata"):
            check.tally(name).filled += 1
    metadata = customer.get("metadata") or {}
    if schema is None:
        for key in metadata:
            check.tally(f"metadata.{key}").filled += 1
        return
    outcome = apply_schema(metadata, schema, options.schema_policy, creating=True)
    if outcome.refused is not None:
        check.rejected_customers += 1
    seen = {event.key for event in outcome.events}
    for key in outcome.metadata or {}:
        if key not in seen:  # not defined in the schema: sent as is
            check.tally(f"metadata.{key}").filled += 1
    for event in outcome.events:
        tally = check.tally(f"metadata.{event.key}")
        if event.status in ("filled", "sent"):
            tally.filled += 1
        elif event.status == "coerced":
            tally.filled += 1
            tally.coerced += 1
        elif event.status in ("dropped", "undefined"):
            tally.dropped += 1
        else:  # refused, missing
            tally.rejected += 1
        if event.rule is not None:
            tally.reasons[event.rule] += 1
