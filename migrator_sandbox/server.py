"""App factory and the three ways to run the sandbox: in-process, in a thread, blocking."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shlex
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from migrator_sandbox import segment_api, voucherify_api
from migrator_sandbox.gateway import LATENCY_KEY, STOPPING_KEY, gateway
from migrator_sandbox.oracle import METADATA_MODES, verify
from migrator_sandbox.settings import SandboxSettings
from migrator_sandbox.state import SANDBOX_KEY, Sandbox

T = TypeVar("T")
_ACCESS_LOG = logging.getLogger("migrator_sandbox.access")


def build_app(sandbox: Sandbox) -> web.Application:
    app = web.Application(middlewares=[gateway], client_max_size=voucherify_api.CLIENT_MAX_SIZE)
    app[SANDBOX_KEY] = sandbox
    app[LATENCY_KEY] = random.Random(f"{sandbox.settings.seed}:latency")
    segment_api.add_routes(app)
    voucherify_api.add_routes(app)
    app.router.add_get("/_sandbox/stats", _stats)
    app.router.add_post("/_sandbox/reset-stats", _reset_stats)
    app.router.add_get("/_sandbox/verify", _verify)
    app.router.add_get("/_sandbox/customers", _customers)
    app.router.add_post("/_sandbox/mutate", _mutate)
    app.router.add_get("/_sandbox/changed", _changed)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    return app


async def _on_startup(app: web.Application) -> None:
    app[STOPPING_KEY] = asyncio.Event()  # created on the serving loop


async def _on_shutdown(app: web.Application) -> None:
    app[STOPPING_KEY].set()  # release hung requests so shutdown is quick
    app[SANDBOX_KEY].actions.close()


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX_KEY].stats_json())


async def _reset_stats(request: web.Request) -> web.Response:
    request.app[SANDBOX_KEY].reset_stats()
    return web.json_response({"reset": True})


async def _customers(request: web.Request) -> web.Response:
    """Every stored customer by source_id, for checks run in another process."""
    return web.json_response(request.app[SANDBOX_KEY].customers)


async def _verify(request: web.Request) -> web.Response:
    """The oracle's verdict, for runs against a sandbox in another process."""
    identifier = request.query.get("identifier", "user_id")
    mode = request.query.get("metadata_mode", "metadata")
    if mode not in METADATA_MODES:
        return web.json_response({"error": f"metadata_mode must be {METADATA_MODES}"}, status=400)
    result = verify(request.app[SANDBOX_KEY], identifier, mode)
    return web.json_response(
        {
            "ok": result.ok,
            "expected": result.expected,
            "arrived": result.arrived,
            "correct": result.correct,
            "missing": result.missing[:100],
            "missing_count": len(result.missing),
            "wrong": result.wrong[:100],
            "wrong_count": len(result.wrong),
            "unexpected": result.unexpected[:100],
            "unexpected_count": len(result.unexpected),
            "no_identifier_count": len(result.no_identifier),
            "duplicates": result.duplicates,  # all of them: compare with the CSV
            "duplicates_count": len(result.duplicates),
        }
    )


_MUTATE_KEYS = {"remove", "set", "count", "segment_ids", "seed", "identifier", "metadata_mode"}


def _mutation(body: Any) -> dict[str, Any] | str:
    """``Sandbox.mutate``'s keyword arguments from a JSON body, or why they are invalid."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = sorted(set(body) - _MUTATE_KEYS)
    if unknown:
        return f"unknown keys: {', '.join(unknown)}"
    remove = body.get("remove", [])
    if not isinstance(remove, list) or not all(
        isinstance(p, str) or (isinstance(p, list) and all(isinstance(k, str) for k in p))
        for p in remove
    ):
        return "remove must be a list of trait paths (dotted strings or lists of keys)"
    if not isinstance(body.get("set", {}), dict):
        return "set must be an object of trait path -> value"
    count, segment_ids = body.get("count"), body.get("segment_ids")
    if (count is None) == (segment_ids is None):
        return "give either count or segment_ids"
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        return "count must be an integer >= 0"
    if segment_ids is not None and (
        not isinstance(segment_ids, list) or not all(isinstance(s, str) for s in segment_ids)
    ):
        return "segment_ids must be a list of strings"
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        return "seed must be an integer"
    if not isinstance(body.get("identifier", "user_id"), str):
        return "identifier must be a string"
    if body.get("metadata_mode", "metadata") not in METADATA_MODES:
        return f"metadata_mode must be one of {', '.join(METADATA_MODES)}"
    return dict(body)


async def _mutate(request: web.Request) -> web.Response:
    """Change profiles between runs; body and answer in ``Sandbox.mutate``'s terms:
    ``{"remove": [...], "set": {...}, "count": N | "segment_ids": [...], "seed": S,
    "identifier": ..., "metadata_mode": ...}`` -> ``{"changed": [...], "changed_count": n}``.
    """
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "the body must be JSON"}, status=400)
    kwargs = _mutation(body)
    if isinstance(kwargs, str):
        return web.json_response({"error": kwargs}, status=400)
    try:
        changed = request.app[SANDBOX_KEY].mutate(**kwargs)
    except KeyError as exc:
        return web.json_response({"error": f"no profile {exc.args[0]}"}, status=404)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"changed": changed, "changed_count": len(changed)})


async def _changed(request: web.Request) -> web.Response:
    changed = request.app[SANDBOX_KEY].changed_profiles()
    return web.json_response({"changed": changed, "changed_count": len(changed)})


def sandbox_env(url: str, settings: SandboxSettings) -> dict[str, str]:
    """The environment that points ``migrator run`` at a sandbox."""
    env = {
        "SEGMENT_API_URL": url,
        "VOUCHERIFY_API_URL": url,
        "SEGMENT_ACCESS_TOKEN": settings.segment_token,
        "SEGMENT_SPACE_ID": settings.space_id,
        "VOUCHERIFY_APPLICATION_ID": settings.app_id,
        "VOUCHERIFY_SECRET_KEY": settings.secret_key,
    }
    if settings.segment_rate > 0:
        env["SEGMENT_RATE_LIMIT"] = str(settings.segment_rate)
    if settings.voucherify_rate > 0:
        env["VOUCHERIFY_RATE_LIMIT"] = str(settings.voucherify_rate)
    return env


class SandboxServer:
    """The sandbox on a real TCP port, on the caller's event loop (``migrator demo``)."""

    def __init__(
        self, settings: SandboxSettings | Sandbox | None = None, *, access_log: bool = False
    ) -> None:
        self.sandbox = settings if isinstance(settings, Sandbox) else Sandbox(settings)
        self.access_log = access_log
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def settings(self) -> SandboxSettings:
        return self.sandbox.settings

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
        """Bind and serve; port 0 picks a free port (see ``.url``)."""
        if self._runner is not None:
            raise RuntimeError("already started")
        runner = web.AppRunner(
            build_app(self.sandbox),
            access_log=_ACCESS_LOG if self.access_log else None,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        self.url = f"http://{shown}:{self.port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self.sandbox.actions.close()

    def env(self) -> dict[str, str]:
        return sandbox_env(self.url, self.settings)

    async def __aenter__(self) -> SandboxServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class ThreadedSandbox:
    """A SandboxServer on its own loop in a daemon thread, for synchronous callers.

    Mutate the sandbox through ``call`` (runs on the server's loop, so it never races a
    request). Reading ``sandbox.customers`` / ``sandbox.stats`` directly is fine while no
    run is in flight.
    """

    def __init__(
        self,
        settings: SandboxSettings | Sandbox | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: bool = False,
    ) -> None:
        self.server = SandboxServer(settings, access_log=access_log)
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def sandbox(self) -> Sandbox:
        return self.server.sandbox

    @property
    def url(self) -> str:
        return self.server.url

    def env(self) -> dict[str, str]:
        return self.server.env()

    def start(self) -> ThreadedSandbox:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="migrator-sandbox", daemon=True
        )
        self._thread.start()
        try:
            self.run(self.server.start(self.host, self.port))
        except BaseException:
            self._halt()
            raise
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        if self._loop is None:
            raise RuntimeError("not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` on the server's loop, e.g. ``call(sandbox.set_trait, sid, k, v)``."""

        async def invoke() -> T:
            return fn(*args, **kwargs)

        return self.run(invoke())

    def wait_idle(self, timeout: float = 30.0) -> bool:
        return self.run(self.sandbox.wait_idle(timeout), timeout + 5)

    def mutate(self, **kwargs: Any) -> list[str]:
        """``Sandbox.mutate`` on the server's loop (same keyword arguments and result)."""
        return self.call(self.sandbox.mutate, **kwargs)

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self.run(self.server.stop())
        finally:
            self._halt()

    def _halt(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> ThreadedSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    settings: SandboxSettings,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    access_log: bool = False,
    profiles_sync: bool = False,
) -> None:
    """Serve until Ctrl-C, after printing the ``export`` lines a shell needs."""
    if access_log:
        logging.basicConfig(level=logging.INFO, format="%(message)s")

    async def main(warehouse: dict[str, str]) -> None:
        server = await SandboxServer(settings, access_log=access_log).start(host, port)
        try:
            for name, value in (server.env() | warehouse).items():
                print(f"export {name}={shlex.quote(value)}")
            print(
                f"# sandbox: {settings.profiles} profiles (seed {settings.seed}) at {server.url};"
                " stats at /_sandbox/stats, verdict at /_sandbox/verify, changes between runs"
                " via POST /_sandbox/mutate; Ctrl-C stops",
                flush=True,
            )
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.ExitStack() as stack:
        warehouse: dict[str, str] = {}
        if profiles_sync:
            from migrator_sandbox.demo import DEMO_SCHEMA
            from migrator_sandbox.generator import ProfileGenerator
            from migrator_sandbox.warehouse import Postgres, create_views, load

            postgres = stack.enter_context(Postgres.serve())
            engine = postgres.engine()
            create_views(engine, DEMO_SCHEMA)
            load(engine, DEMO_SCHEMA, ProfileGenerator(settings))
            engine.dispose()
            warehouse = {
                "MIGRATOR_SOURCE": "profiles-sync",
                "PROFILES_SYNC_URL": postgres.url,
                "PROFILES_SYNC_SCHEMA": DEMO_SCHEMA,
            }
        try:
            asyncio.run(main(warehouse))
        except KeyboardInterrupt:
            print("# sandbox stopped", file=sys.stderr)
