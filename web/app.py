"""The app factory: ``create_app(runtime, settings)`` builds one Quart app; nothing is global.

Quart runs on AnyIO's asyncio backend only (it needs a running asyncio loop). Serve the app with
``web.server.WebServer`` inside the supervisor tree, or test it with ``app.test_client()``.
"""

from __future__ import annotations

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Quart
from quart_schema import Info, QuartSchema

from actors.runtime import Runtime
from taskflow.config import Settings
from taskflow.redislink import MemoryRateStore, RedisLink, RedisRateStore
from taskflow.version import __version__
from web.admission import Admission
from web.api import API_NAME, api
from web.auth import SCHEME, make_auth
from web.dlq import dlq
from web.errors import register_error_handlers
from web.fragments import fragments
from web.keys import keys
from web.logs import logs
from web.middleware import with_request_context
from web.openapi import ApiOpenAPIProvider
from web.pages import install_pages
from web.prometheus import count_requests, prometheus
from web.ratelimit import GroupRateLimiter, RateStore, group_limits
from web.state import ApiState, install
from web.streams import streams


class ApiApp(Quart):
    """Quart with the request-id and timing layer around every HTTP request."""

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        await with_request_context(super().__call__, scope, receive, send)


def create_app(runtime: Runtime, settings: Settings) -> Quart:
    """A Quart app serving the API for ``runtime``.

    Routes: ``/api/v1/...`` (see ``web.api``), ``/openapi.json``, ``/docs`` (Swagger UI) and
    ``/redoc``. Bodies above ``settings.max_body_bytes`` are refused with 413, whether the
    client announced their length or not.
    """
    app = ApiApp(__name__, static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PROPAGATE_EXCEPTIONS=False,  # even in testing: unexpected errors get the envelope
    )
    app.url_map.merge_slashes = False  # `//` would redirect with an HTML body; a 404 is clearer
    resources = runtime.resources
    auth = make_auth(settings, resources.keys)
    install(
        app,
        ApiState(
            runtime=runtime, settings=settings, auth=auth, admission=_admission(runtime, settings)
        ),
    )
    rates = _rate_store(resources.redis)
    auth.install(
        app, between=lambda a: GroupRateLimiter(a, limits=group_limits(settings), store=rates)
    )
    QuartSchema(
        app,
        info=Info(
            title=API_NAME,
            version=__version__,
            description="Submit jobs, follow them, cancel them, and replay dead letters.",
        ),
        openapi_path="/openapi.json",
        swagger_ui_path=None,  # /docs and /redoc: web.pages, with the packaged assets
        redoc_ui_path=None,
        scalar_ui_path=None,
        conversion_preference="msgspec",
        openapi_provider_class=ApiOpenAPIProvider,
        security_schemes={
            SCHEME: {"type": "http", "scheme": "bearer", "bearer_format": "tf_..."},
        },
        security=[{SCHEME: []}],
    )
    register_error_handlers(app)
    app.register_blueprint(api)
    app.register_blueprint(dlq)
    app.register_blueprint(logs)
    app.register_blueprint(prometheus)
    app.register_blueprint(keys)
    app.register_blueprint(streams)
    install_pages(app)
    app.register_blueprint(fragments)
    count_requests(app)
    return app


def _rate_store(redis: object | None) -> RateStore:
    """Redis's atomic store when the process has Redis (per-process while it is down), else
    this process's."""
    if isinstance(redis, RedisLink):
        return RedisRateStore(redis)
    return MemoryRateStore()


def _admission(runtime: Runtime, settings: Settings) -> Admission | None:
    if settings.max_backlog is None:
        return None

    def drain_rate() -> float:
        snapshot = runtime.metrics()
        return snapshot.throughput_60s + snapshot.failures_60s

    return Admission(
        max_backlog=settings.max_backlog,
        queries=runtime.resources.queries,
        drain_rate=drain_rate,
    )
