"""The slice of the Voucherify API the migrator uses, per docs/contracts.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aiohttp import web

from migrator_sandbox.gateway import REQUEST_ID, json_response, query_int, voucherify_error
from migrator_sandbox.state import SANDBOX_KEY, count_nulls
from migrator_sandbox.store import KNOWN_FIELDS, iso_ms

MAX_ITEMS = 100
MAX_BYTES = 10 * 1024 * 1024
CLIENT_MAX_SIZE = 4 * MAX_BYTES  # let oversized bodies reach the handler and get our 413
_SCHEMA_CREATED = 1700000000.0


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/customers/bulk/async", bulk_upsert, name="voucherify.bulk")
    app.router.add_get("/v1/async-actions", list_actions, name="voucherify.actions")
    app.router.add_get("/v1/async-actions/{action_id}", get_action, name="voucherify.action")
    app.router.add_get(
        "/v1/metadata-schemas/customer", metadata_schema, name="voucherify.metadata_schema"
    )
    app.router.add_get("/v1/customers/{source_id}", get_customer, name="voucherify.customer")


def _refuse(request: web.Request) -> web.Response | None:
    settings = request.app[SANDBOX_KEY].settings
    if (
        request.headers.get("X-App-Id") != settings.app_id
        or request.headers.get("X-App-Token") != settings.secret_key
    ):
        return voucherify_error(
            401, "unauthorized", "Unauthorized", "Cannot authenticate the request"
        )
    return None


async def bulk_upsert(request: web.Request) -> web.Response:
    refused = _refuse(request)
    if refused is not None:
        return refused
    sandbox = request.app[SANDBOX_KEY]
    stats = sandbox.stats
    raw = await request.read()

    def reject(status: int, key: str, message: str, details: str) -> web.Response:
        stats.bulk_rejected += 1
        return voucherify_error(status, key, message, details)

    if len(raw) > MAX_BYTES:
        return reject(413, "payload_too_large", "Payload too large", "The limit is 10 MB")
    try:
        items = json.loads(raw)
    except ValueError:
        return reject(400, "invalid_json", "Invalid JSON", "The body is not valid JSON")
    if not isinstance(items, list):
        return reject(400, "invalid_payload", "Invalid payload", "Expected an array of customers")
    if sandbox.settings.record_bodies:
        sandbox.bodies.append(items)
    if not items:
        return reject(400, "invalid_payload", "Invalid payload", "The array is empty")
    if len(items) > MAX_ITEMS:
        details = f"At most {MAX_ITEMS} customers per request, got {len(items)}"
        return reject(400, "too_many_items", "Too many items", details)
    stats.customers_received += len(items)
    stats.count_items(items)
    stats.nulls_received += count_nulls(items)
    action = sandbox.actions.enqueue(items, REQUEST_ID.get())
    stats.invalid_items += sum(problem is not None for problem in action.problems)
    stats.unknown_fields_received += sum(
        sum(key not in KNOWN_FIELDS for key in item) for item in items if isinstance(item, dict)
    )
    stats.bulk_accepted += 1
    return json_response({"async_action_id": action.id}, 202)


async def get_action(request: web.Request) -> web.Response:
    refused = _refuse(request)
    if refused is not None:
        return refused
    action_id = request.match_info["action_id"]
    action = request.app[SANDBOX_KEY].action(action_id)
    if action is None:
        details = f"Cannot find async_action with id {action_id}"
        return voucherify_error(404, "not_found", "Resource not found", details)
    return json_response(action.to_json())


def _parse_instant(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


async def list_actions(request: web.Request) -> web.Response:
    """Newest first; ``end_date`` keeps actions created strictly before it (for paging)."""
    refused = _refuse(request)
    if refused is not None:
        return refused
    limit = query_int(request, "limit", 10, 1, 100)
    if limit is None:
        return voucherify_error(400, "invalid_param", "Invalid parameter", "limit must be 1..100")
    end = None
    if "end_date" in request.query:
        end = _parse_instant(request.query["end_date"])
        if end is None:
            return voucherify_error(
                400, "invalid_param", "Invalid parameter", "end_date must be ISO 8601"
            )
    selected = []
    has_more = False
    for action in request.app[SANDBOX_KEY].actions.newest_first:
        # Compare at the millisecond precision the API shows, so end_date=<created_at> pages.
        if end is not None and int(action.created_at * 1000) >= round(end * 1000):
            continue
        if len(selected) == limit:
            has_more = True
            break
        selected.append(action.to_json(with_result=False))
    body = {"object": "list", "data_ref": "async_actions", "async_actions": selected}
    body["has_more"] = has_more
    return json_response(body)


async def metadata_schema(request: web.Request) -> web.Response:
    refused = _refuse(request)
    if refused is not None:
        return refused
    settings = request.app[SANDBOX_KEY].settings
    properties = {
        key: {"type": "string", "array": False, "optional": True, **spec}
        for key, spec in settings.schema.items()
    }
    return json_response(
        {
            "id": "ms_sandbox_customer",
            "related_object": "customer",
            "properties": properties,
            "allow_defined_only": settings.allow_defined_only,
            "created_at": iso_ms(_SCHEMA_CREATED),
            "updated_at": iso_ms(_SCHEMA_CREATED),
            "object": "metadata_schema",
        }
    )


async def get_customer(request: web.Request) -> web.Response:
    refused = _refuse(request)
    if refused is not None:
        return refused
    source_id = request.match_info["source_id"]
    customer = request.app[SANDBOX_KEY].store.to_json(source_id)
    if customer is None:
        details = f"Cannot find customer with id {source_id}"
        return voucherify_error(404, "not_found", "Resource not found", details)
    return json_response(customer)
