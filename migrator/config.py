"""Settings from the environment and `.env`, validated once at start-up.

Names are the old Node.js tool's, so an existing `.env` keeps working. Every problem is
reported, all at once, as one `ConfigError` line per variable naming it and what it
expects; the CLI turns that into exit code 2 without a traceback.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

from migrator.exceptions import ConfigError
from migrator.mapping import STANDARD_TRAITS, MetadataMode
from migrator.mapping_file import MappingSpec
from migrator.schema import SCHEMA_POLICIES, SchemaPolicy

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class SourceName(StrEnum):
    """Where profiles are read: Segment's Profile API, or Profiles Sync in a warehouse."""

    profile_api = "profile-api"
    profiles_sync = "profiles-sync"


SOURCES: tuple[str, ...] = tuple(SourceName)


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to reach its source and Voucherify. Secrets stay out of `repr`."""

    segment_access_token: str = field(repr=False)
    segment_space_id: str
    voucherify_application_id: str
    voucherify_secret_key: str = field(repr=False)
    source: str = "profile-api"
    profiles_sync_url: str = field(default="", repr=False)
    profiles_sync_schema: str = ""
    profiles_sync_overlap: float = 3600.0
    keep_removed: bool = False
    mapping_file: str = ""
    schema_policy: str = "drop_value"
    segment_request_limit: int = 100
    segment_traits_limit: int = 200
    identifier: str = "user_id"
    segment_api_url: str = "https://profiles.segment.com"
    voucherify_api_url: str = "https://api.voucherify.io"
    segment_rate_limit: float = 100.0
    voucherify_rate_limit: float = 100.0
    request_timeout: float = 30.0
    max_attempts: int = 8

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be printed, logged or stored."""
        found = [self.segment_access_token, self.voucherify_secret_key]
        password = _url_password(self.profiles_sync_url)
        if password:
            found.append(password)
        return tuple(s for s in found if s)


class _Problems:
    """Collects every problem, so that one start-up names them all (not one per try)."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, message: str) -> None:
        self.found.append(message)

    def raise_any(self) -> None:
        if self.found:
            raise ConfigError(*self.found)


def _required(env: Mapping[str, str], name: str, what: str, problems: _Problems) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        problems.add(f"{name} is not set: expected {what}")
    return value


def _int(
    env: Mapping[str, str], name: str, default: int, low: int, high: int, problems: _Problems
) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.add(f"{name}={raw!r} is not valid: expected a whole number from {low} to {high}")
        return default
    if not low <= value <= high:
        problems.add(
            f"{name}={value} is out of range: expected a whole number from {low} to {high}"
        )
        return default
    return value


def _float(
    env: Mapping[str, str],
    name: str,
    default: float,
    low: float,
    high: float,
    problems: _Problems,
) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.add(f"{name}={raw!r} is not valid: expected a number from {low:g} to {high:g}")
        return default
    if not math.isfinite(value) or not low <= value <= high:
        problems.add(f"{name}={raw} is out of range: expected a number from {low:g} to {high:g}")
        return default
    return value


def _choice(
    env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str, problems: _Problems
) -> str:
    raw = (env.get(name) or "").strip() or default
    if raw not in choices:
        problems.add(f"{name}={raw!r} is not valid: expected one of {', '.join(choices)}")
        return default
    return raw


def _bool(env: Mapping[str, str], name: str, problems: _Problems) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    problems.add(f"{name}={raw!r} is not valid: expected true or false")
    return False


#: `scheme://user:password@` in a URL: never echoed back in a message.
_USERINFO = re.compile(r"(?<=//)[^/?#]*@")


def _url(env: Mapping[str, str], name: str, default: str, problems: _Problems) -> str:
    raw = (env.get(name) or "").strip() or default
    if _USERINFO.search(raw):
        # Never echo the value: it holds a password or a token.
        problems.add(
            f"{name} holds credentials (user:password@): expected https://host only; the "
            "credentials belong in their own variables"
        )
        return default
    try:
        parts = urlsplit(raw)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        problems.add(f"{name}={raw!r} is not a valid URL: expected https://host")
        return default
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in raw):
        problems.add(f"{name}={raw!r} is not a valid URL: expected https://host")
        return default
    if parts.scheme == "http" and not _is_loopback(host):
        problems.add(
            f"{name}={raw!r} uses plain http: expected https:// (http is allowed only for "
            "127.0.0.1, localhost or ::1)"
        )
        return default
    return raw.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_environment(
    env_file: Path | None = None, fallback: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The process environment over the `.env` file over `fallback`: the real environment
    wins. An empty variable counts as not set, so it never hides a value from a lower layer
    (`export VOUCHERIFY_SECRET_KEY=` in a crontab does not blank the one in `.env`)."""
    path = env_file if env_file is not None else Path.cwd() / ".env"
    if env_file is not None and not path.is_file():
        raise ConfigError(f"--env-file {path} does not exist: expected a readable .env file")
    values: dict[str, str] = dict(fallback or {})
    if path.is_file():
        try:
            from_file = dotenv_values(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} cannot be read: {exc}") from None
        values.update({k: v for k, v in from_file.items() if v is not None and v.strip()})
    values.update({k: v for k, v in os.environ.items() if v.strip()})
    return values


def env_file_read(env_file: Path | None) -> Path | None:
    """The settings file a command reads, absolute: `--env-file`, or `./.env` if there is one."""
    path = env_file if env_file is not None else Path.cwd() / ".env"
    return path.absolute() if path.is_file() else None


def _url_password(url: str) -> str | None:
    try:
        return unquote(urlsplit(url).password or "") or None
    except ValueError:
        return None


def _source(env: Mapping[str, str], problems: _Problems) -> str:
    source = (env.get("MIGRATOR_SOURCE") or "").strip() or "profile-api"
    if source not in SOURCES:
        problems.add(
            f"MIGRATOR_SOURCE={source!r} is not valid: expected one of {', '.join(SOURCES)}"
        )
        return "profile-api"
    return source


def _database_url(env: Mapping[str, str], problems: _Problems) -> str:
    raw = _required(
        env, "PROFILES_SYNC_URL", "the warehouse's database URL (postgresql://...)", problems
    )
    if not raw:
        return raw
    try:
        scheme = urlsplit(raw).scheme
    except ValueError:
        scheme = ""
    if not scheme or any(c.isspace() for c in raw):
        # Never echo the value: it may hold a password.
        problems.add(
            "PROFILES_SYNC_URL is not a database URL: expected e.g. "
            "postgresql://user:password@host:5432/database"
        )
    return raw


def _schema_name(env: Mapping[str, str], problems: _Problems) -> str:
    schema = _required(
        env, "PROFILES_SYNC_SCHEMA", "the schema that holds the Profiles Sync views", problems
    )
    if schema and not all(c.isalnum() or c in "_$" for c in schema):
        problems.add(
            f"PROFILES_SYNC_SCHEMA={schema!r} is not valid: expected a schema name "
            "(letters, digits, _)"
        )
    return schema


def _identifier(env: Mapping[str, str], problems: _Problems) -> str:
    identifier = (env.get("IDENTIFIER_SAVED_AS_SOURCE_ID") or "").strip() or "user_id"
    if any(c.isspace() or c in ",:/" for c in identifier):
        problems.add(
            f"IDENTIFIER_SAVED_AS_SOURCE_ID={identifier!r} is not valid: expected an external id "
            "type such as user_id, email or anonymous_id"
        )
    return identifier


def load_settings(env: Mapping[str, str]) -> Settings:
    """Validate every variable once; every problem found is reported, in one `ConfigError`.

    The Segment variables are required only for the Profile API source, the warehouse
    ones only for Profiles Sync.
    """
    p = _Problems()
    source = _source(env, p)
    api = source == "profile-api"
    if api:
        token = _required(env, "SEGMENT_ACCESS_TOKEN", "the Segment Profile API access token", p)
        space = _required(env, "SEGMENT_SPACE_ID", "the Segment Unify space id (spa_...)", p)
    else:
        token = (env.get("SEGMENT_ACCESS_TOKEN") or "").strip()
        space = (env.get("SEGMENT_SPACE_ID") or "").strip()
    settings = Settings(
        segment_access_token=token,
        segment_space_id=space,
        source=source,
        profiles_sync_url="" if api else _database_url(env, p),
        profiles_sync_schema="" if api else _schema_name(env, p),
        keep_removed=_bool(env, "MIGRATOR_KEEP_REMOVED", p),
        mapping_file=(env.get("MAPPING_FILE") or "").strip(),
        schema_policy=_choice(env, "METADATA_SCHEMA_POLICY", SCHEMA_POLICIES, "drop_value", p),
        profiles_sync_overlap=_float(
            env, "PROFILES_SYNC_OVERLAP_SECONDS", 3600.0, 0.0, 30 * 86400, p
        ),
        voucherify_application_id=_required(
            env, "VOUCHERIFY_APPLICATION_ID", "the Voucherify application id", p
        ),
        voucherify_secret_key=_required(
            env, "VOUCHERIFY_SECRET_KEY", "the Voucherify secret key", p
        ),
        segment_request_limit=_int(env, "SEGMENT_REQUEST_LIMIT", 100, 1, 100, p),
        segment_traits_limit=_int(env, "SEGMENT_TRAITS_LIMIT", 200, 1, 200, p),
        identifier=_identifier(env, p),
        segment_api_url=_url(env, "SEGMENT_API_URL", "https://profiles.segment.com", p),
        voucherify_api_url=_url(env, "VOUCHERIFY_API_URL", "https://api.voucherify.io", p),
        segment_rate_limit=_float(env, "SEGMENT_RATE_LIMIT", 100.0, 0.1, 100_000.0, p),
        voucherify_rate_limit=_float(env, "VOUCHERIFY_RATE_LIMIT", 100.0, 1.0, 1_000_000.0, p),
        request_timeout=_float(env, "REQUEST_TIMEOUT", 30.0, 0.1, 3600.0, p),
        max_attempts=_int(env, "MAX_ATTEMPTS", 8, 1, 100, p),
    )
    p.raise_any()
    return settings


@dataclass(frozen=True)
class RunOptions:
    """What a command asked for; `Settings` says how to reach the APIs."""

    #: None: the mapping file's mode, or `metadata` without a file.
    metadata_mode: MetadataMode | None = None
    #: A loaded mapping file (None: the built-in rules of docs/mapping.md).
    mapping: MappingSpec | None = None
    #: What to do with a metadata value the Voucherify schema cannot take.
    schema_policy: SchemaPolicy = "drop_value"
    full: bool = False
    dry_run: bool = False
    checkpointing: bool = True
    #: Leave in Voucherify what this tool wrote earlier and Segment no longer has.
    keep_removed: bool = False
    #: The settings file the command read (absolute), for the printed resume command only.
    env_file: Path | None = None
    #: The mapping file as given (absolute), stored with the checkpoint; None: built in.
    mapping_path: str | None = None

    @property
    def mode(self) -> MetadataMode:
        if self.metadata_mode is not None:
            return self.metadata_mode
        return MetadataMode(self.mapping.metadata_mode if self.mapping else "metadata")

    def traits_to_fetch(self) -> tuple[str, ...] | None:
        """The traits the mapping reads (None: all), so a source can fetch only those."""
        if self.mapping is not None:
            return self.mapping.traits_to_fetch(self.mode)
        return None if self.mode == "all" else STANDARD_TRAITS
