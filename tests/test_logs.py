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


def test_details_are_kept_only_where_a_handler_would_write_them() -> None:
    """Per-profile INFO lines are skipped (not built) when nothing would show them: the
    console without -v drops them; -v, a log file or a propagating test logger keeps them."""
    from migrator.logs import keeps_details

    parent = logging.getLogger("migrator-test-details")
    child = logging.getLogger("migrator-test-details.pipeline")
    parent.setLevel(logging.DEBUG)
    parent.propagate = False
    try:
        assert not keeps_details(child)  # no handler: logging's last resort shows warnings
        console = Keep()
        console.setLevel(logging.INFO)
        console.addFilter(ConsoleFilter(console, verbose=False))
        parent.addHandler(console)
        assert not keeps_details(child)
        verbose = Keep()
        verbose.addFilter(ConsoleFilter(verbose, verbose=True))
        parent.addHandler(verbose)
        assert keeps_details(child)
        parent.removeHandler(verbose)
        log_file = Keep()
        log_file.setLevel(logging.DEBUG)
        parent.addHandler(log_file)
        assert keeps_details(child)
        parent.setLevel(logging.WARNING)
        assert not keeps_details(child)
        parent.setLevel(logging.DEBUG)
        parent.removeHandler(log_file)
        parent.propagate = True  # caplog and friends listen on the root logger
        root = logging.getLogger()
        listening = Keep()
        root.addHandler(listening)
        try:
            assert keeps_details(child)
        finally:
            root.removeHandler(listening)
    finally:
        parent.handlers.clear()
        parent.propagate = True
