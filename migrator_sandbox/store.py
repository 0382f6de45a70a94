"""Voucherify's side: the check of each bulk item, stored customers and the queue of bulk
async actions.

The check is hand-written against the official request schema. The package must not read
the schema file at run time, and the real API deviates from the schema in one way that
matters: ``null`` is accepted for scalar fields, ``address``, a key of ``address`` and a key
of ``metadata``, and it overwrites the stored value (``metadata`` itself must be an
object). The check reproduces that behaviour.
"""

from __future__ import annotations

import asyncio
import calendar
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrator_sandbox.faults import FaultInjector
from migrator_sandbox.metadata_rules import metadata_problems
from migrator_sandbox.settings import SandboxSettings

if TYPE_CHECKING:  # state imports this module
    from migrator_sandbox.state import SandboxStats

# -- the check of one bulk item -------------------------------------------------------------

STRING_FIELDS = ("name", "description", "email", "phone")
DATE_FIELDS = ("birthdate", "birthday")
KNOWN_FIELDS = ("source_id", *STRING_FIELDS, *DATE_FIELDS, "address", "metadata")
ADDRESS_FIELDS = ("city", "state", "line_1", "line_2", "country", "postal_code")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def is_date(value: str) -> bool:
    """JSON Schema ``format: date``: a real calendar day written YYYY-MM-DD."""
    match = _DATE.fullmatch(value)
    if not match:
        return False
    year, month, day = (int(part) for part in match.groups())
    return year >= 1 and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def customer_problem(item: Any) -> str | None:
    """Why Voucherify would reject this item, or None when it is acceptable."""
    if not isinstance(item, dict):
        return "customer must be an object"
    source_id = item.get("source_id")
    if not isinstance(source_id, str) or not source_id:
        return "source_id is required and must be a non-empty string"
    for key in STRING_FIELDS:
        if key in item and item[key] is not None and not isinstance(item[key], str):
            return f"{key} must be a string"
    for key in DATE_FIELDS:
        value = item.get(key)
        if value is not None and not (isinstance(value, str) and is_date(value)):
            return f"{key} must be a date in the format YYYY-MM-DD"
    address = item.get("address")
    if address is not None:
        if not isinstance(address, dict):
            return "address must be an object"
        for key, value in address.items():
            if value is not None and not isinstance(value, str):
                return f"address.{key} must be a string"
    if "metadata" in item and not isinstance(item["metadata"], dict):
        return "metadata must be an object"
    return None


def item_source_id(item: Any) -> str:
    """The source_id to name in an error; "" when the item has none usable."""
    if isinstance(item, dict) and isinstance(item.get("source_id"), str):
        return item["source_id"]
    return ""


# -- stored customers and async actions -----------------------------------------------------

ENQUEUED, IN_PROGRESS, DONE, FAILED = "ENQUEUED", "IN_PROGRESS", "DONE", "FAILED"
REPORTS_KEPT_S = 7 * 86400
_EPSILON = 1e-3  # timers may fire a hair early; treat "due within 1 ms" as due


def iso_ms(epoch: float) -> str:
    """Voucherify's timestamp style: milliseconds and Z."""
    seconds = int(epoch)
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{moment}.{int((epoch - seconds) * 1000):03d}Z"


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(9)


@dataclass
class AsyncAction:
    """One accepted bulk request; its items are written only when it turns DONE."""

    id: str
    request_id: str
    items: list[Any]
    problems: list[str | None]
    created_at: float  # epoch, for the API
    start_at: float  # loop time: ENQUEUED -> IN_PROGRESS
    done_at: float  # loop time: -> DONE or FAILED
    status: str = ENQUEUED
    progress: int = 0
    updated_at: float = 0.0
    processing_ms: int = 0
    result: dict[str, Any] | None = field(default=None)

    def to_json(self, with_result: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "type": "CUSTOMERS.BULK_UPDATE",
            "status": self.status,
            "operation_status": {DONE: "SUCCESS", FAILED: "FAILED"}.get(self.status, "UNKNOWN"),
            "created_at": iso_ms(self.created_at),
            "updated_at": iso_ms(self.updated_at or self.created_at),
            "request_id": self.request_id,
            "processing_time": self.processing_ms,
            "progress": self.progress,
            "object": "async_action",
        }
        if with_result and self.result is not None:
            data["result"] = self.result
        return data


OBJECT_FIELDS = ("address", "metadata")


class CustomerStore:
    """source_id -> customer exactly as the requests built it (no server-side fields),
    so a verifier can compare it with an expected customer for equality.

    ``merge_objects``: address and metadata are merged key by key, as some APIs do,
    instead of replaced as whole objects.
    """

    def __init__(self, merge_objects: bool = False) -> None:
        self.merge_objects = merge_objects
        self.customers: dict[str, dict[str, Any]] = {}
        self._meta: dict[str, tuple[str, float, float]] = {}

    def upsert(self, item: dict[str, Any]) -> None:
        """Field by field: present keys replace (null included), absent keys are kept.

        Address and metadata are replaced as whole objects; with ``merge_objects`` an
        object is merged into the stored one instead (present keys replace, a null key is
        stored as null), and a null object still replaces it.
        """
        source_id = item["source_id"]
        fields = {key: item[key] for key in item if key in KNOWN_FIELDS}
        now = time.time()
        stored = self.customers.get(source_id)
        if stored is None:
            self.customers[source_id] = fields
            self._meta[source_id] = (new_id("cust_"), now, now)
        else:
            if self.merge_objects:
                for key in OBJECT_FIELDS:
                    old, new = stored.get(key), fields.get(key)
                    if isinstance(old, dict) and isinstance(new, dict):
                        fields[key] = {**old, **new}
            stored.update(fields)
            # A test may have put the customer into ``customers`` directly: no meta yet.
            cust_id, created, _ = self._meta.get(source_id) or (new_id("cust_"), now, now)
            self._meta[source_id] = (cust_id, created, now)

    def to_json(self, source_id: str) -> dict[str, Any] | None:
        stored = self.customers.get(source_id)
        if stored is None:
            return None
        cust_id, created, updated = self._meta.setdefault(
            source_id, (new_id("cust_"), time.time(), time.time())
        )
        return {
            "id": cust_id,
            **stored,
            "object": "customer",
            "created_at": iso_ms(created),
            "updated_at": iso_ms(updated),
        }


class ActionQueue:
    """FIFO of async actions driven by one timer on the running loop.

    Completion happens in request order even when two actions fall due at the same
    instant (asyncio's timer heap does not promise FIFO for equal deadlines).
    """

    def __init__(
        self,
        settings: SandboxSettings,
        stats: Callable[[], SandboxStats],
        faults: FaultInjector,
        store: CustomerStore,
    ) -> None:
        self.settings = settings
        self._stats = stats
        self.faults = faults
        self.store = store
        self.actions: dict[str, AsyncAction] = {}
        self.newest_first: deque[AsyncAction] = deque()
        self._queue: deque[AsyncAction] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def enqueue(self, items: list[Any], request_id: str) -> AsyncAction:
        loop = self._loop = asyncio.get_running_loop()
        now, delay = loop.time(), self.settings.async_delay
        problems = [customer_problem(item) for item in items]
        action = AsyncAction(
            id=new_id("aa_"),
            request_id=request_id,
            items=items,
            problems=problems,
            created_at=time.time(),
            start_at=now + delay / 2,
            done_at=now + delay,
        )
        self.actions[action.id] = action
        self.newest_first.appendleft(action)
        self._queue.append(action)
        self._stats().async_actions += 1
        self._schedule()
        return action

    def pending(self) -> int:
        return len(self._queue)

    async def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once every accepted action is DONE or FAILED (polls: no loop-bound state)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queue:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop the clock; unfinished actions stay as they are (the service went away)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        if self._loop is None or not self._queue:
            return
        next_at = self._queue[0].done_at
        for action in self._queue:
            if action.status == ENQUEUED:
                next_at = min(next_at, action.start_at)
                break
        if self._timer is not None:
            if self._timer.when() <= next_at:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(next_at, self._tick)

    def _tick(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time() + _EPSILON
        while self._queue and self._queue[0].done_at <= now:
            self._finish(self._queue.popleft())
        for action in self._queue:
            if action.start_at > now:
                break
            if action.status == ENQUEUED:
                action.status, action.progress, action.updated_at = IN_PROGRESS, 50, time.time()
        self._schedule()

    def _finish(self, action: AsyncAction) -> None:
        stats = self._stats()
        action.updated_at = time.time()
        action.processing_ms = int((action.updated_at - action.created_at) * 1000)
        action.progress = 100
        if self.faults.action_fails():
            action.status = FAILED
            action.result = {"message": "Internal error while processing the async action"}
            stats.actions_failed += 1
            stats.faults_injected["action_failed"] += 1
            return
        errors = []
        for item, problem in zip(action.items, action.problems, strict=True):
            error = self._item_error(item, problem)
            if error is None:
                self.store.upsert(item)
                stats.customers_written += 1
            else:
                errors.append(error)
                stats.customer_errors += 1
        action.status = DONE
        action.result = {
            "done_count": len(action.items) - len(errors),
            "failed_count": len(errors),
            "errors": errors,
            "reports": [],
            "reports_available_till": iso_ms(action.updated_at + REPORTS_KEPT_S),
        }
        stats.actions_done += 1

    def _item_error(self, item: Any, problem: str | None) -> dict[str, str] | None:
        source_id = item_source_id(item)

        def error(key: str, message: str, details: str) -> dict[str, str]:
            return {"source_id": source_id, "key": key, "message": message, "details": details}

        if problem is not None:
            return error("invalid_customer", "Invalid customer", problem)
        invalid = metadata_problems(
            item.get("metadata"),
            self.settings.schema,
            creating=source_id not in self.store.customers,
            allow_defined_only=self.settings.allow_defined_only,
        )
        if invalid:
            self._stats().metadata_rejections += 1
            details = "Metadata validation failed: " + "; ".join(invalid)
            return error("metadata_validation_failed", "Metadata validation failed", details)
        if self.faults.customer_fails(source_id):
            self._stats().faults_injected["customer_error"] += 1
            return error(
                "customer_upsert_failed", "Customer could not be saved", "Temporary failure"
            )
        return None
