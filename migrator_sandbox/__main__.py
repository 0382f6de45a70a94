"""``python -m migrator_sandbox --profiles N --port P ...``: serve the sandbox until Ctrl-C."""

from __future__ import annotations

from migrator_sandbox.server import serve
from migrator_sandbox.settings import parse_args


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    serve(options.settings, options.host, options.port, access_log=options.access_log)


if __name__ == "__main__":
    main()
