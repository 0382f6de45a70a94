"""The sandbox's whole state: profiles (+ overlay), customers, actions, limits, stats."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from migrator_sandbox.faults import FaultInjector
from migrator_sandbox.generator import GeneratedProfile, ProfileGenerator, ProfileTruth
from migrator_sandbox.ratelimit import SlidingWindow
from migrator_sandbox.settings import SandboxSettings
from migrator_sandbox.stats import SandboxStats
from migrator_sandbox.store import ActionQueue, AsyncAction, CustomerStore

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
        self.store = CustomerStore()
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
