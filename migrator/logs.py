"""Logging helpers: a last line of defence that keeps secrets out of every log line."""

from __future__ import annotations

import logging


class RedactingFilter(logging.Filter):
    """Replaces any secret value that slipped into a record with `***`.

    The clients never log headers, so this should never fire; it exists so that a future
    mistake (an exception text, a debug line) cannot leak a token to a log file.
    """

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if any(secret in message for secret in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        return True
