"""Knobs of the sandbox: data size and shape, limits, latency and fault injection.

Also the command line of ``python -m migrator_sandbox`` that sets them, kept apart from
serving so a typer command can offer the same settings and call ``serve`` itself.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from migrator_sandbox.metadata_rules import TYPED_SCHEMA

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
    ``KNOB_HELP`` below says what each knob means.
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
    typed_schema: bool = False
    loose_metadata: bool = False
    long_tail: float = 0.05
    no_identifier: float = 0.08
    shared_identifier: float = 0.0
    merge_objects: bool = False
    record_bodies: bool = False
    hang_cap_s: float = 120.0

    @property
    def schema(self) -> dict[str, dict]:
        """The customer metadata schema Voucherify applies: the one given, else the typed
        one when ``typed_schema`` is on, else none."""
        if self.metadata_schema:
            return self.metadata_schema
        return TYPED_SCHEMA if self.typed_schema else {}

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
        for name in [*shares, "long_tail", "no_identifier", "shared_identifier"]:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        # Per-request faults are drawn from one roll, so their shares must fit in it.
        if sum(getattr(self, name) for name in FAULT_SHARES) > 1.0:
            raise ValueError("the per-request fault shares must sum to at most 1")


# -- the command line -----------------------------------------------------------------------

_SPECIAL = {"latency_min_ms", "latency_max_ms", "metadata_schema"}

#: What each knob means, for `--help` (the default is appended).
KNOB_HELP = {
    "profiles": "profiles generated in the Segment space",
    "seed": "seed of the generator: the same seed gives the same profiles",
    "space_id": "the Segment space id the API answers to",
    "segment_token": "the Segment access token it accepts",
    "app_id": "the Voucherify application id it accepts",
    "secret_key": "the Voucherify secret key it accepts",
    "segment_rate": "Segment requests per second, a strict sliding window (0: no limit)",
    "voucherify_rate": "Voucherify requests per minute, a strict sliding window (0: no limit)",
    "async_delay": "seconds before a bulk request's async action is DONE",
    "fault_5xx": "share of requests answered 500/502/503",
    "fault_hang": "share of requests that hang (the client's timeout must fire)",
    "fault_reset": "share of requests whose connection is dropped",
    "fault_malformed": "share of answers with a body that is not what the API documents",
    "fault_429_burst": "share of requests answered 429 whatever the rate",
    "fault_action_failed": "share of async actions that end FAILED",
    "fault_customer_error": "share of customers rejected in an async action's result",
    "fault_customer_error_sticky": "a rejected customer is rejected again on every retry",
    "allow_defined_only": "the customer metadata schema rejects undefined keys",
    "typed_schema": (
        "Voucherify defines a typed customer metadata schema (number, boolean, date, "
        "datetime, string array, eq and length constraints; --metadata-schema overrides it) "
        "and rejects every customer whose metadata does not fit it"
    ),
    "loose_metadata": (
        "the metadata trait holds loosely typed values, as Segment traits often do: "
        '"34" for a number, "true" for a boolean, date-times for dates, naive date-times, '
        "a lone string for an array"
    ),
    "long_tail": "share of profiles with 201-300 traits and the identifier on a later page",
    "no_identifier": "share of profiles without the user_id identifier",
    "shared_identifier": (
        "share of profiles whose user_id is another profile's (a copy with an earlier, "
        "later or equal created_at); the migrator keeps the earliest one's customer and "
        "lists the others in duplicate-identifiers.csv"
    ),
    "merge_objects": (
        "Voucherify merges address and metadata key by key (a null key clears it) instead "
        "of replacing them as whole objects"
    ),
    "record_bodies": "keep every bulk body (for schema checks in tests)",
    "hang_cap_s": "longest a hanging request is held before its connection is dropped (s)",
}


class ServeOptions(NamedTuple):
    settings: SandboxSettings
    host: str
    port: int
    access_log: bool
    profiles_sync: bool = False


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
        description="Serve a local double of the Segment Profile API and Voucherify, and print "
        "the `export` lines that point `migrator run` at it. Shares are probabilities from 0 "
        "to 1; the per-request fault shares must add up to at most 1.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (8765)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--profiles-sync",
        action="store_true",
        help="also load the profiles into a Profiles Sync warehouse (a throwaway Postgres "
        "from the pgserver wheel) and print the variables of that source",
    )
    parser.add_argument(
        "--latency-ms",
        type=_latency,
        metavar="MIN,MAX",
        default=(0.0, 0.0),
        help="added to every API answer, drawn uniformly in MIN..MAX ms (0)",
    )
    parser.add_argument(
        "--metadata-schema",
        type=_schema,
        metavar="JSON",
        default={},
        help='the customer metadata schema\'s properties, {"key": {"type": "string"}, ...}',
    )
    # Every other setting becomes --its-name, typed by its default.
    for spec in fields(SandboxSettings):
        if spec.name in _SPECIAL:
            continue
        flag = "--" + spec.name.replace("_", "-")
        default = spec.default
        meaning = KNOB_HELP.get(spec.name, "")
        if isinstance(default, bool):
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=f"{meaning} (default: {'on' if default else 'off'})",
            )
        else:
            if isinstance(default, str):
                metavar = "TEXT"
            elif spec.name.startswith("fault_") or spec.name in (
                "long_tail",
                "no_identifier",
                "shared_identifier",
            ):
                metavar = "SHARE"
            else:
                metavar = "N"
            parser.add_argument(
                flag,
                type=type(default),
                default=default,
                metavar=metavar,
                help=f"{meaning} ({default})",
            )
    return parser


def parse_args(
    argv: list[str] | None = None, prog: str = "python -m migrator_sandbox"
) -> ServeOptions:
    args = vars(build_parser(prog).parse_args(argv))
    host, port, access_log = args.pop("host"), args.pop("port"), args.pop("access_log")
    profiles_sync = args.pop("profiles_sync")
    args["latency_min_ms"], args["latency_max_ms"] = args.pop("latency_ms")
    return ServeOptions(SandboxSettings(**args), host, port, access_log, profiles_sync)
