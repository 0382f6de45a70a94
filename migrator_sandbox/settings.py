"""Knobs of the sandbox: data size and shape, limits, latency and fault injection."""

from __future__ import annotations

from dataclasses import dataclass, field

FAULT_SHARES = (
    "fault_429_burst",
    "fault_5xx",
    "fault_hang",
    "fault_reset",
    "fault_malformed",
)


@dataclass
class SandboxSettings:
    """Everything that shapes one sandbox; defaults give a realistic, fault-free double.

    Rates mirror the production defaults the migrator must respect: Segment counts
    requests per second per space, Voucherify requests per minute (0 = no limit).
    Fault shares are probabilities per request (or per action / customer).
    """

    profiles: int = 2000
    seed: int = 1
    space_id: str = "spa_sandbox"
    segment_token: str = "sandbox-segment-token"
    app_id: str = "sandbox-app-id"
    secret_key: str = "sandbox-secret-key"
    segment_rate: int = 100
    voucherify_rate: int = 0
    latency_min_ms: float = 0.0
    latency_max_ms: float = 0.0
    async_delay: float = 0.2
    fault_5xx: float = 0.0
    fault_hang: float = 0.0
    fault_reset: float = 0.0
    fault_malformed: float = 0.0
    fault_429_burst: float = 0.0
    fault_action_failed: float = 0.0
    fault_customer_error: float = 0.0
    fault_customer_error_sticky: bool = False
    allow_defined_only: bool = False
    metadata_schema: dict[str, dict] = field(default_factory=dict)
    long_tail: float = 0.05
    no_identifier: float = 0.08
    record_bodies: bool = False
    hang_cap_s: float = 120.0

    def __post_init__(self) -> None:
        # Fail at construction, not mid-benchmark, on knobs that cannot be honoured.
        if self.profiles < 0:
            raise ValueError("profiles must be >= 0")
        if self.segment_rate < 0 or self.voucherify_rate < 0:
            raise ValueError("rates must be >= 0 (0 = unlimited)")
        if not 0 <= self.latency_min_ms <= self.latency_max_ms:
            raise ValueError("need 0 <= latency_min_ms <= latency_max_ms")
        if self.async_delay < 0:
            raise ValueError("async_delay must be >= 0")
        shares = [*FAULT_SHARES, "fault_action_failed", "fault_customer_error"]
        for name in [*shares, "long_tail", "no_identifier"]:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        # Per-request faults are drawn from one roll, so their shares must fit in it.
        if sum(getattr(self, name) for name in FAULT_SHARES) > 1.0:
            raise ValueError("the per-request fault shares must sum to at most 1")
