"""What a run reports: live counts, and why it stopped when it could not go on."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from migrator.exceptions import AccountError, ApiError, InvalidPosition, SourceUnavailable


@dataclass
class Counts:
    """Live counters, read by the CLI for progress and by the report."""

    profiles_read: int = 0
    customers_sent: int = 0
    confirmed: int = 0
    unchanged: int = 0
    no_identifier: int = 0
    duplicates: int = 0
    failed: int = 0
    would_send: int = 0
    warnings: int = 0
    batches: int = 0
    batches_resent: int = 0
    merged: int = 0
    #: field -> values dropped because of their type (a boolean name, a list metadata...)
    dropped_for_type: dict[str, int] = field(default_factory=dict)
    #: metadata key -> {filled, coerced, dropped, refused, sent, undefined} against the schema
    metadata_schema: dict[str, dict[str, int]] = field(default_factory=dict)
    retries: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("started_at")
        elapsed = time.monotonic() - self.started_at
        data["elapsed_seconds"] = round(elapsed, 3)
        data["profiles_per_second"] = round(self.profiles_read / elapsed, 2) if elapsed > 0 else 0.0
        return data


class RunStopped(Exception):
    """The run could not go on; everything before `position` is settled and saved."""

    def __init__(self, cause: BaseException, position: str | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.position = position
        self.account = isinstance(cause, AccountError)

    @property
    def hint(self) -> str | None:
        """What a human can change before resuming, when the cause tells."""
        if self.account:
            return "check the credentials and the plan of the API named above, then resume."
        cause = self.cause
        if isinstance(cause, ApiError) and cause.status == 429:
            # Retries honour Retry-After, so a 429 that outlasts them all is a limit set
            # higher than the account allows, or one shared with another client.
            setting = "SEGMENT_RATE_LIMIT" if cause.api == "segment" else "VOUCHERIFY_RATE_LIMIT"
            return (
                f"{cause.api} kept answering 429 through every retry: its limit is lower than "
                f"{setting} says, or another client uses the same limit. Lower {setting}, "
                "then resume."
            )
        if isinstance(cause, SourceUnavailable):
            return "check that the warehouse is reachable, then resume."
        return None


def stop_cause(exc: BaseException) -> BaseException | None:
    """The API, network or source fault that stopped a run, if that is all `exc` holds.

    Anything else is a bug and is shown as it is.
    """
    if isinstance(exc, BaseExceptionGroup):
        causes = [stop_cause(e) for e in exc.exceptions]
        if any(c is None for c in causes):
            return None
        # Prefer a refused start position, then an account error: they say what to fix.
        for kind in (InvalidPosition, AccountError):
            found = next((c for c in causes if isinstance(c, kind)), None)
            if found is not None:
                return found
        return causes[0]
    if isinstance(exc, ApiError | OSError | SourceUnavailable | InvalidPosition):
        return exc
    return None
