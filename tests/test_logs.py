"""What the console shows of the log: retried requests summarised, secrets never."""

from __future__ import annotations

import logging

from migrator.http import RETRY_RECORD
from migrator.logs import ConsoleFilter, RedactingFilter


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.shown: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.shown.append(record.getMessage())


def retry(handler: logging.Handler, cause: str) -> None:
    record = logging.makeLogRecord(
        {"levelno": logging.INFO, "levelname": "INFO", "msg": f"{cause}; retry 1 in 1s"}
    )
    setattr(record, RETRY_RECORD, cause)
    handler.handle(record)


def test_the_console_filter_shows_the_first_retry_then_one_line_a_minute() -> None:
    """Issue 14.9: 960 warning lines in 17 s when the API went away; now the first retry,
    then one line a minute, and nothing below a warning unless -v."""
    now = [0.0]
    handler = Keep()
    handler.addFilter(ConsoleFilter(handler, verbose=False, clock=lambda: now[0]))
    handler.handle(logging.makeLogRecord({"levelno": logging.INFO, "msg": "an info line"}))
    for second in range(0, 150):
        now[0] = float(second)
        retry(handler, f"cause {second}")
    shown = handler.shown
    assert len(shown) == 3, shown
    assert shown[0].startswith("cause 0; retrying (retries are summarised")
    assert shown[1] == "60 requests retried in the last 60 s (latest: cause 60)"
    assert shown[2] == "60 requests retried in the last 60 s (latest: cause 120)"


def test_with_verbose_every_retry_and_info_line_is_shown() -> None:
    handler = Keep()
    handler.addFilter(ConsoleFilter(handler, verbose=True))
    handler.handle(logging.makeLogRecord({"levelno": logging.INFO, "msg": "an info line"}))
    for n in range(5):
        retry(handler, f"cause {n}")
    assert len(handler.shown) == 6


def test_a_summary_line_is_redacted_too() -> None:
    handler = Keep()
    handler.addFilter(RedactingFilter(("s3cret",)))
    handler.addFilter(ConsoleFilter(handler, verbose=False))
    retry(handler, "failed with s3cret")
    assert handler.shown and "s3cret" not in handler.shown[0]
