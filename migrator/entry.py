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


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM raise `Interrupted` (a SIGINT ignored by whoever started us, as
    `nohup` does, stays ignored)."""
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
