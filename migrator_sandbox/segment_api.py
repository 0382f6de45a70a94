"""The Segment Profile API (Unify) for one space, per docs/contracts.md."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from migrator_sandbox.gateway import json_response, query_int, segment_error
from migrator_sandbox.generator import AUDIENCE_KEYS, COMPUTED_KEYS, GeneratedProfile
from migrator_sandbox.state import SANDBOX_KEY, Sandbox

BASE = "/v1/spaces/{space_id}/collections/{collection}/profiles"
TRAIT_CLASSES = {"audience": AUDIENCE_KEYS, "computed_trait": COMPUTED_KEYS}


def add_routes(app: web.Application) -> None:
    app.router.add_get(BASE, list_profiles, name="segment.list")
    app.router.add_get(BASE + "/{profile_id}/traits", traits, name="segment.traits")
    app.router.add_get(BASE + "/{profile_id}/external_ids", external_ids, name="segment.ext")
    app.router.add_get(BASE + "/{profile_id}/metadata", metadata, name="segment.metadata")


def _authorized(request: web.Request, token: str) -> bool:
    """HTTP Basic with the access token as user name and an empty password."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, colon, password = decoded.partition(":")
    return bool(colon) and user == token and password == ""


def _gate(request: web.Request) -> web.Response | None:
    """Auth first (as Segment does), then space and collection."""
    sandbox = request.app[SANDBOX_KEY]
    if not _authorized(request, sandbox.settings.segment_token):
        return segment_error(401, "authentication_error", "Invalid or missing access token")
    if request.match_info["space_id"] != sandbox.settings.space_id:
        return segment_error(404, "not_found", "Space not found")
    if request.match_info["collection"] != "users":
        return segment_error(404, "not_found", "Collection not found")
    return None


def _encode_cursor(kind: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(kind: str, token: str | None) -> int | None:
    """Offset of an opaque cursor; 0 without one, None for a cursor this call did not issue."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, number = text.partition(":")
        offset = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return offset if prefix == kind and offset >= 0 else None


def _page(
    request: web.Request, kind: str, items: list[Any], default: int, high: int
) -> tuple[list[Any], dict[str, Any]] | web.Response:
    limit = query_int(request, "limit", default, 1, high)
    if limit is None:
        return segment_error(400, "validation_error", f"limit must be between 1 and {high}")
    offset = _decode_cursor(kind, request.query.get("next"))
    if offset is None:
        return segment_error(400, "validation_error", "invalid cursor")
    end = offset + limit
    has_more = end < len(items)
    cursor = {
        "url": request.path_qs,
        "has_more": has_more,
        "next": _encode_cursor(kind, end) if has_more else "",
        "limit": limit,
    }
    return items[offset:end], cursor


def _csv(request: web.Request, name: str) -> set[str] | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _resolve(request: web.Request) -> tuple[Sandbox, GeneratedProfile, dict] | web.Response:
    refused = _gate(request)
    if refused is not None:
        return refused
    sandbox = request.app[SANDBOX_KEY]
    id_type, colon, value = request.match_info["profile_id"].partition(":")
    if not colon or not id_type or not value:
        return segment_error(400, "validation_error", "profile id must be written type:value")
    segment_id = sandbox.lookup(id_type, value)
    if segment_id is None:
        return segment_error(404, "not_found", "Profile not found")
    generated, current = sandbox.view(segment_id)
    return sandbox, generated, current


async def list_profiles(request: web.Request) -> web.Response:
    refused = _gate(request)
    if refused is not None:
        return refused
    ids = request.app[SANDBOX_KEY].segment_ids()
    page = _page(request, "p", ids, 10, 100)
    if isinstance(page, web.Response):
        return page
    items, cursor = page
    return json_response({"data": [{"segment_id": sid} for sid in items], "cursor": cursor})


async def traits(request: web.Request) -> web.Response:
    resolved = _resolve(request)
    if isinstance(resolved, web.Response):
        return resolved
    sandbox, generated, current = resolved
    keys: Iterable[str] = current
    include = _csv(request, "include")
    if include is not None:
        keys = [key for key in keys if key in include]
    trait_class = request.query.get("class")
    if trait_class is not None:
        if trait_class not in TRAIT_CLASSES:
            return segment_error(400, "validation_error", "class must be audience|computed_trait")
        keys = [key for key in keys if key in TRAIT_CLASSES[trait_class]]
    page = _page(request, "t", list(keys), 10, 200)
    if isinstance(page, web.Response):
        return page
    names, cursor = page
    if request.query.get("verbose", "").lower() == "true":
        source = generated.external_ids[0]["source_id"]
        updated = generated.metadata["updated_at"]
        changed = sandbox.overlay_keys(generated.segment_id)
        changed_at = sandbox.changed_at(generated.segment_id)
        body = {
            k: {
                "value": current[k],
                "source_id": source,
                "updated_at": changed_at if k in changed else updated,
            }
            for k in names
        }
    else:
        body = {key: current[key] for key in names}
    return json_response({"traits": body, "cursor": cursor})


async def external_ids(request: web.Request) -> web.Response:
    resolved = _resolve(request)
    if isinstance(resolved, web.Response):
        return resolved
    _, generated, _ = resolved
    entries = generated.external_ids
    include = _csv(request, "include")
    if include is not None:
        entries = [entry for entry in entries if entry["type"] in include]
    page = _page(request, "e", entries, 25, 100)
    if isinstance(page, web.Response):
        return page
    data, cursor = page
    return json_response({"data": data, "cursor": cursor})


async def metadata(request: web.Request) -> web.Response:
    resolved = _resolve(request)
    if isinstance(resolved, web.Response):
        return resolved
    sandbox, generated, _ = resolved
    changed_at = sandbox.changed_at(generated.segment_id)
    if changed_at is None:
        return json_response({"metadata": generated.metadata})
    return json_response({"metadata": {**generated.metadata, "updated_at": changed_at}})
