"""Counters a benchmark or a test reads after a run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any


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
