"""The sandbox's whole state: profiles (+ overlay), customers, actions, limits, and the
counters a benchmark or a test reads after a run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web

from migrator_sandbox.faults import FaultInjector, SlidingWindow
from migrator_sandbox.generator import GeneratedProfile, ProfileGenerator, ProfileTruth
from migrator_sandbox.settings import SandboxSettings
from migrator_sandbox.store import ActionQueue, AsyncAction, CustomerStore


@dataclass
class SandboxStats:
    """Request, item and fault counters.

    Times are wall-clock epoch seconds so that a client in another process can compare
    them with its own clock; throughput is requests over (last - first).
    ``*_429`` counts every 429 answered (limit and injected bursts);
    ``*_rate_limited`` only those caused by the configured rate.
    """

    segment_requests: int = 0
    segment_429: int = 0
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
    bulk_accepted: int = 0
    bulk_rejected: int = 0
    customers_received: int = 0
    nulls_received: int = 0
    invalid_items: int = 0
    unknown_fields_received: int = 0
    async_actions: int = 0
    actions_done: int = 0
    actions_failed: int = 0
    customers_written: int = 0
    customer_errors: int = 0
    faults_injected: Counter[str] = field(default_factory=Counter)

    def segment_throughput(self) -> float:
        """Segment requests per second between the first and the last one."""
        first, last = self.segment_first_request_at, self.segment_last_request_at
        if first is None or last is None or last <= first:
            return 0.0
        return self.segment_requests / (last - first)

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting them.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
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
        traits = dict(generated.traits)
        for key, value in overlay.items():
            if value is _DELETED:
                traits.pop(key, None)
            else:
                traits[key] = value
        return generated, traits

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

    def delete_trait(self, segment_id: str, key: str) -> None:
        self._generated(segment_id)
        self._overlay.setdefault(segment_id, {})[key] = _DELETED

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
        return data


SANDBOX_KEY = web.AppKey("sandbox", Sandbox)
