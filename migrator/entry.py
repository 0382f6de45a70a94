"""The `migrator` console script. Light on purpose: Ctrl-C and SIGTERM are answered from
the first moment, before the command line's heavy imports (which take a good part of a
second), with exit code 130 and one line, never a traceback."""

from __future__ import annotations

import signal
import sys
from types import FrameType

EXIT_INTERRUPTED = 130


class Interrupted(BaseException):
    """SIGINT or SIGTERM outside the event loop. A BaseException, so that nothing on the way
    (click turns a KeyboardInterrupt into "Aborted!" and exit 1) mistakes it for an error."""


#: The signal received outside the event loop, if any: see `raise_if_interrupted`.
_received: str | None = None


def _interrupted(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signal.Signals(signum).name
    raise Interrupted(_received)


def raise_if_interrupted() -> None:
    """Raise `Interrupted` if a signal came and its exception was lost.

    A handler's exception can land where Python only prints it ("Exception ignored in"):
    a weakref callback of the import machinery, a `__del__`. The signal is remembered, so
    the command still stops before its run starts, instead of running to the end.
    """
    if _received is not None:
        raise Interrupted(_received)


def _unraisable(info: sys.UnraisableHookArgs) -> None:
    """An `Interrupted` that lands where it cannot propagate is remembered (see
    `raise_if_interrupted`), not printed as a traceback."""
    if isinstance(info.exc_value, Interrupted):
        return
    sys.__unraisablehook__(info)


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM raise `Interrupted` (a SIGINT ignored by whoever started us, as
    `nohup` does, stays ignored)."""
    sys.unraisablehook = _unraisable
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)


def main() -> None:
    install_signal_handlers()
    try:
        from migrator.cli import main as cli_main
    except Interrupted:
        from migrator.report import report_early_exit

        report_early_exit(sys.argv[1:], EXIT_INTERRUPTED, "interrupted", "interrupted")
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    cli_main()


if __name__ == "__main__":  # pragma: no cover - `python -m migrator.entry`, as the script
    main()
