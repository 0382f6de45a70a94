"""The sandbox's whole state: profiles (+ overlay), customers, actions, limits, and the
counters a benchmark or a test reads after a run."""

from __future__ import annotations

import copy
import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web

from migrator_sandbox.faults import FaultInjector, SlidingWindow
from migrator_sandbox.generator import GeneratedProfile, ProfileGenerator, ProfileTruth
from migrator_sandbox.oracle import expected_customer
from migrator_sandbox.settings import SandboxSettings
from migrator_sandbox.store import ActionQueue, AsyncAction, CustomerStore, iso_ms


@dataclass
class SandboxStats:
    """Request, item and fault counters.

    Times are wall-clock epoch seconds so that a client in another process can compare
    them with its own clock; throughput is requests over (last - first).
    ``*_429`` counts every 429 answered (limit and injected bursts);
    ``*_rate_limited`` only those caused by the configured rate.
    ``bulk_items`` counts the items of accepted bulk requests (as ``customers_received``);
    ``max_items_per_source_id`` is the most items any one source_id had among them (1 when
    every customer was sent once: more means resends, e.g. after an interrupted run).
    ``items_per_source_id`` holds those counts; it is left out of ``as_dict`` (one entry
    per customer).
    """

    segment_requests: int = 0
    segment_429: int = 0
    #: Segment 429s by whole seconds since the first Segment request ("0": the first
    #: second, where a client's start burst shows)
    segment_429_by_second: Counter[int] = field(default_factory=Counter)
    segment_rate_limited: int = 0
    segment_first_request_at: float | None = None
    segment_last_request_at: float | None = None
    segment_endpoints: Counter[str] = field(default_factory=Counter)
    voucherify_requests: int = 0
    voucherify_429: int = 0
    voucherify_rate_limited: int = 0
    voucherify_first_request_at: float | None = None
    voucherify_last_request_at: float | None = None
    voucherify_endpoints: Counter[str] = field(default_factory=Counter)
    bulk_requests: int = 0
    #: When the last bulk request came, and the polls (list and read calls) before it:
    #: the exact end of a run's write window (benchmarks/throughput.py).
    last_bulk_at: float | None = None
    polls_before_last_bulk: int = 0
    bulk_accepted: int = 0
    bulk_rejected: int = 0
    customers_received: int = 0
    bulk_items: int = 0
    max_items_per_source_id: int = 0
    items_per_source_id: Counter[str] = field(default_factory=Counter, repr=False)
    nulls_received: int = 0
    invalid_items: int = 0
    unknown_fields_received: int = 0
    async_actions: int = 0
    actions_done: int = 0
    actions_failed: int = 0
    customers_written: int = 0
    customer_errors: int = 0
    #: customers rejected by the metadata schema (a type, a constraint, a required key)
    metadata_rejections: int = 0
    faults_injected: Counter[str] = field(default_factory=Counter)

    def segment_throughput(self) -> float:
        """Segment requests per second between the first and the last one."""
        first, last = self.segment_first_request_at, self.segment_last_request_at
        if first is None or last is None or last <= first:
            return 0.0
        return self.segment_requests / (last - first)

    def count_items(self, items: list[Any]) -> None:
        """Count the items of an accepted bulk request."""
        self.bulk_items += len(items)
        per_source = self.items_per_source_id
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("source_id"), str):
                per_source[item["source_id"]] += 1
                self.max_items_per_source_id = max(
                    self.max_items_per_source_id, per_source[item["source_id"]]
                )

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting them.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        for key, value in data.items():
            if isinstance(value, Counter):
                data[key] = dict(value)
        data["segment_throughput"] = self.segment_throughput()
        return data


def count_nulls(value: Any) -> int:
    """Nulls anywhere in a received item: each one erases a stored value in Voucherify."""
    if value is None:
        return 1
    if isinstance(value, dict):
        return sum(count_nulls(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_nulls(v) for v in value)
    return 0


_DELETED = object()

#: A trait path: ``"phone"``, ``"metadata.tier"``, or its keys ``("metadata", "tier")``.
TraitPath = str | Sequence[str]


def _parse_path(path: TraitPath) -> tuple[str, ...]:
    parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    if not parts or not all(isinstance(part, str) and part for part in parts):
        raise ValueError(f"a trait path is a dotted string or a list of keys, got {path!r}")
    return parts


def _apply(traits: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``traits`` with top-level overrides and removals (``_DELETED``) applied."""
    result = dict(traits)
    for key, value in overlay.items():
        if value is _DELETED:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def _changes(
    traits: dict[str, Any],
    removals: list[tuple[str, ...]],
    assignments: list[tuple[tuple[str, ...], Any]],
) -> dict[str, Any]:
    """The top-level overlay entries that apply ``removals`` then ``assignments`` to
    ``traits`` (copied where nested); only those that change something."""
    work: dict[str, Any] = {}  # top-level key -> new value or _DELETED

    def current(key: str) -> Any:
        if key in work:
            return work[key]
        return copy.deepcopy(traits[key]) if key in traits else _DELETED

    for parts in removals:
        top = current(parts[0])
        if top is _DELETED:
            continue
        if len(parts) == 1:
            work[parts[0]] = _DELETED
            continue
        container = top
        for part in parts[1:-1]:
            container = container.get(part) if isinstance(container, dict) else None
        if isinstance(container, dict) and parts[-1] in container:
            del container[parts[-1]]
            work[parts[0]] = top
    for parts, value in assignments:
        if len(parts) == 1:
            work[parts[0]] = copy.deepcopy(value)
            continue
        top = current(parts[0])
        if not isinstance(top, dict):
            top = {}
        container = top
        for part in parts[1:-1]:
            if not isinstance(container.get(part), dict):
                container[part] = {}
            container = container[part]
        container[parts[-1]] = copy.deepcopy(value)
        work[parts[0]] = top
    return {
        key: value
        for key, value in work.items()
        if (value is _DELETED and key in traits)
        or (value is not _DELETED and (key not in traits or traits[key] != value))
    }


class Sandbox:
    """Data and behaviour shared by both fake APIs; independent of any HTTP server.

    Not thread-safe: mutate it on the loop that serves it (``ThreadedSandbox.call``).
    Reading ``customers`` or ``stats`` from another thread while the server is idle is fine.
    """

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        self.generator = ProfileGenerator(self.settings)
        self.stats = SandboxStats()
        self.faults = FaultInjector(self.settings)
        self.store = CustomerStore(self.settings.merge_objects)
        self.actions = ActionQueue(self.settings, lambda: self.stats, self.faults, self.store)
        self.segment_limiter = SlidingWindow(self.settings.segment_rate, 1.0)
        self.voucherify_limiter = SlidingWindow(self.settings.voucherify_rate, 60.0)
        self.bodies: list[list[Any]] = []
        self._overlay: dict[str, dict[str, Any]] = {}
        self._changed: dict[str, str] = {}

    # -- profiles -------------------------------------------------------------------------

    def segment_ids(self) -> list[str]:
        """Every profile's segment_id, in the order the list endpoint returns them."""
        return self.generator.segment_ids()

    def _generated(self, segment_id: str) -> GeneratedProfile:
        index = self.generator.index_of(segment_id)
        if index is None:
            raise KeyError(segment_id)
        return self.generator.profile(index)

    def view(self, segment_id: str) -> tuple[GeneratedProfile, dict[str, Any]]:
        """The profile and its current traits without copying (read-only, for handlers)."""
        generated = self._generated(segment_id)
        overlay = self._overlay.get(segment_id)
        if not overlay:
            return generated, generated.traits
        return generated, _apply(generated.traits, overlay)

    def overlay_keys(self, segment_id: str) -> frozenset[str]:
        """Top-level trait keys changed (set or removed) since the profile was generated."""
        return frozenset(self._overlay.get(segment_id, ()))

    def profile(self, segment_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(traits, external_ids) as the Segment API serves them now; safe-to-mutate copies."""
        generated, traits = self.view(segment_id)
        return dict(traits), [dict(entry) for entry in generated.external_ids]

    def truth(self, segment_id: str) -> ProfileTruth:
        """What the generator intended (ignores the overlay)."""
        return self._generated(segment_id).truth

    def lookup(self, id_type: str, value: str) -> str | None:
        return self.generator.lookup(id_type, value)

    def set_trait(self, segment_id: str, key: str, value: Any) -> None:
        """Change a trait as a later Segment event would (a new key goes last)."""
        self._generated(segment_id)
        self._overlay.setdefault(segment_id, {})[key] = value
        self._changed[segment_id] = iso_ms(time.time())

    def delete_trait(self, segment_id: str, key: str) -> None:
        self._generated(segment_id)
        self._overlay.setdefault(segment_id, {})[key] = _DELETED
        self._changed[segment_id] = iso_ms(time.time())

    def mutate(
        self,
        *,
        remove: Iterable[TraitPath] = (),
        set: Mapping[str, Any] | None = None,
        count: int | None = None,
        segment_ids: Iterable[str] | None = None,
        seed: int = 0,
        identifier: str = "user_id",
        metadata_mode: str = "metadata",
    ) -> list[str]:
        """Change profiles between two runs, as later Segment events would; returns the
        segment_ids whose traits changed (now listed by ``changed_profiles``).

        ``remove``: trait paths to delete: ``"phone"`` a trait, ``"metadata.tier"`` a key of
        the ``metadata`` trait, ``"address.city"`` a key of the nested ``address`` trait
        (``"city"`` is the trait-level one); a list such as ``["odd.key", "x"]`` for keys
        with dots. A missing path is skipped. ``set``: dotted path -> new value (missing
        parents become objects). Removals apply first.

        Which profiles: the given ``segment_ids``, or ``count`` of them chosen
        deterministically (from the sandbox's seed and ``seed``) among profiles that have an
        identifier, do not share it with another profile and were not changed before, and
        whose expected customer (for ``identifier`` and ``metadata_mode``) the removals alone
        alter, and the whole change too (so ``remove=["phone"]`` picks profiles whose
        customer has a phone). Fewer are returned when not enough qualify. Only an overlay
        is kept per changed profile.
        """
        removals = [_parse_path(path) for path in remove]
        assignments = [(_parse_path(path), value) for path, value in (set or {}).items()]
        if (count is None) == (segment_ids is None):
            raise ValueError("give either count or segment_ids")
        if count is not None:
            if count < 0:
                raise ValueError("count must be >= 0")
            targets = self._pick(count, seed, removals, assignments, identifier, metadata_mode)
        else:
            targets = list(dict.fromkeys(segment_ids or ()))
            for segment_id in targets:
                self._generated(segment_id)  # KeyError before anything changes
        changed = []
        now = iso_ms(time.time())
        for segment_id in targets:
            _, traits = self.view(segment_id)
            changes = _changes(traits, removals, assignments)
            if changes:
                self._overlay.setdefault(segment_id, {}).update(changes)
                self._changed[segment_id] = now
                changed.append(segment_id)
        return changed

    def _pick(
        self,
        count: int,
        seed: int,
        removals: list[tuple[str, ...]],
        assignments: list[tuple[tuple[str, ...], Any]],
        identifier: str,
        metadata_mode: str,
    ) -> list[str]:
        """Walk the profiles in a seeded order (a stride, no list of them) until ``count``
        qualify."""
        ids, total, chosen = self.segment_ids(), len(self.segment_ids()), []
        if not total or not count:
            return chosen
        rng = random.Random(f"{self.settings.seed}:mutate:{seed}")
        start, step = rng.randrange(total), 1
        if total > 2:
            step = rng.randrange(1, total)
            while math.gcd(step, total) != 1:
                step = rng.randrange(1, total)
        for k in range(total):
            index = (start + k * step) % total
            segment_id = ids[index]
            if segment_id in self._changed or self.generator.shares_identifier(index):
                continue
            generated, traits = self.view(segment_id)
            before = expected_customer(
                segment_id, traits, generated.external_ids, identifier, metadata_mode
            )
            if before is None:
                continue
            steps = [(removals, [])] if removals else []
            steps.append((removals, assignments))
            for step_removals, step_assignments in steps:
                after_traits = _apply(traits, _changes(traits, step_removals, step_assignments))
                after = expected_customer(
                    segment_id, after_traits, generated.external_ids, identifier, metadata_mode
                )
                if after == before:
                    break
            else:
                chosen.append(segment_id)
                if len(chosen) == count:
                    break
        return chosen

    def changed_profiles(self) -> list[str]:
        """segment_ids changed since the sandbox started, in the order first changed."""
        return list(self._changed)

    def changed_at(self, segment_id: str) -> str | None:
        """When the profile last changed (ISO, ms), for Segment's ``updated_at``."""
        return self._changed.get(segment_id)

    # -- Voucherify side ------------------------------------------------------------------

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        """source_id -> stored customer, exactly the fields the requests set."""
        return self.store.customers

    def action(self, action_id: str) -> AsyncAction | None:
        return self.actions.actions.get(action_id)

    def pending_actions(self) -> int:
        return self.actions.pending()

    async def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every accepted bulk request is DONE or FAILED."""
        return await self.actions.wait_idle(timeout)

    # -- admin ----------------------------------------------------------------------------

    def reset_stats(self) -> None:
        """New counters (data, limits and recorded bodies are kept)."""
        self.stats = SandboxStats()

    def stats_json(self) -> dict[str, Any]:
        data = self.stats.as_dict()
        data["customers_stored"] = len(self.customers)
        data["pending_actions"] = self.pending_actions()
        data["profiles_changed"] = len(self._changed)
        return data


SANDBOX_KEY = web.AppKey("sandbox", Sandbox)
