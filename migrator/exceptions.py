"""Errors, classified once so that every layer above knows what to do with them.

The HTTP layer sorts every failed response into one of these classes *before* deciding to
retry (the singer-sdk idea): only `RetryableError` is retried; `AccountError` stops the run
at once; `RequestRejected` concerns one request (one profile, one batch) and never blocks
the others.
"""

from __future__ import annotations


class MigratorError(Exception):
    """Base class of the errors the migrator raises on purpose."""


class ConfigError(MigratorError):
    """Bad configuration (exit code 2): one line per problem, each naming what to fix."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class InvalidPosition(ConfigError):
    """The position a run was asked to start at (`--offset`, or the checkpoint) is not one
    the source can resume from: it does not decode, or the API refused it (exit code 2)."""

    def __init__(self, position: str | None, reason: str) -> None:
        super().__init__(f"cannot start at {position!r}: {reason}")
        self.position = position
        self.reason = reason


class OptionsChanged(ConfigError):
    """A run asks for another shape of customers than the one stored for its --out-dir."""

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


class LockedError(MigratorError):
    """Another run holds the output directory (exit code 4)."""


class ApiError(MigratorError):
    """A response that is not what was asked for. Carries the request id, never headers."""

    def __init__(
        self,
        api: str,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        host: str | None = None,
    ) -> None:
        self.api = api
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.host = host
        self.reason = message
        where = f" (HTTP {status}" if status is not None else " ("
        where += f", code {code}" if code else ""
        where += f", request id {request_id})" if request_id else ")"
        at = f" at {host}" if host else ""
        super().__init__(f"{api}{at}: {message}{where if where != ' ()' else ''}")


class RetryableError(ApiError):
    """429, 5xx, timeouts, dropped connections and malformed bodies: worth another try."""


class RequestRejected(ApiError):
    """A 4xx other than 401/402/403/429: this request will fail the same way if repeated."""


class AccountError(ApiError):
    """401, 402, 403 or an exhausted plan quota: nothing will work until a human acts."""


class SourceUnavailable(MigratorError):
    """The source stopped answering mid-run (a warehouse connection dropped): resumable."""
