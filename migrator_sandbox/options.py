"""Command-line knobs of ``python -m migrator_sandbox``, kept apart from serving so a typer
command can offer the same settings and call ``serve`` itself."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import NamedTuple

from migrator_sandbox.settings import SandboxSettings

_SPECIAL = {"latency_min_ms", "latency_max_ms", "metadata_schema"}


class ServeOptions(NamedTuple):
    settings: SandboxSettings
    host: str
    port: int
    access_log: bool


def _latency(text: str) -> tuple[float, float]:
    parts = [float(part) for part in text.split(",")]
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError("expected MS or MIN,MAX")
    return parts[0], parts[1]


def _schema(text: str) -> dict[str, dict]:
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError('expected {"key": {"type": "string", ...}, ...}')
    return value


def build_parser(prog: str = "python -m migrator_sandbox") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a local double of the Segment Profile API and Voucherify.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--latency-ms", type=_latency, metavar="MIN,MAX", default=(0.0, 0.0))
    parser.add_argument("--metadata-schema", type=_schema, metavar="JSON", default={})
    # Every other setting becomes --its-name, typed by its default.
    for spec in fields(SandboxSettings):
        if spec.name in _SPECIAL:
            continue
        flag = "--" + spec.name.replace("_", "-")
        default = spec.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            metavar = "TEXT" if isinstance(default, str) else "N"
            parser.add_argument(
                flag, type=type(default), default=default, metavar=metavar, help=f"({default})"
            )
    return parser


def parse_args(
    argv: list[str] | None = None, prog: str = "python -m migrator_sandbox"
) -> ServeOptions:
    args = vars(build_parser(prog).parse_args(argv))
    host, port, access_log = args.pop("host"), args.pop("port"), args.pop("access_log")
    args["latency_min_ms"], args["latency_max_ms"] = args.pop("latency_ms")
    return ServeOptions(SandboxSettings(**args), host, port, access_log)
