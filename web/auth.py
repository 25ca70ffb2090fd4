"""API keys at the edge: who is asking (``identify``), and may they (``authorize``).

Each route declares the scope it needs with ``@requires(Scope.X)`` (also its OpenAPI
``security``); ``@open_route`` marks the few that need none (health). A route that declares
nothing needs ``read`` for GET and HEAD and ``admin`` otherwise, so a new route is never open
by accident. Lookups of a key's hash are cached ``KEY_CACHE_SECONDS`` per process: a revoked
key stops working on every API process within that time.

``identify`` runs first and never refuses (the rate limiter keys by the key's name, else by
the client's address, even for a request about to get a 401); ``authorize`` runs after the
rate limiter and answers 401 ``unauthorized`` or 403 ``forbidden`` with ``WWW-Authenticate``.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from quart import Quart, current_app, g, request
from quart_schema import document_response as documented
from quart_schema import security_scheme
from werkzeug.datastructures import Headers

from taskflow import limits
from taskflow.config import Settings, networks
from taskflow.errors import StoreError
from taskflow.keys import ApiKey, Scope, key_hash
from taskflow.ports.keys import KeyStore
from web.responses import ApiError
from web.schemas import ErrorEnvelope

F = TypeVar("F", bound=Callable[..., object])
SCOPE_ATTRIBUTE = "_taskflow_scope"
OPEN = "open"
SCHEME = "bearer"
OPEN_ENDPOINTS = frozenset({"openapi", "swagger_ui", "redoc_ui"})
"""quart-schema's own routes: the API's description, not its data."""
REALM = 'Bearer realm="taskflow"'
KEY_DOC = (
    "An API key (`taskflow keys create NAME --scopes read,submit`) sent as "
    "`Authorization: Bearer <key>` when TASKFLOW_AUTH=required. Scopes: `read` (GETs and "
    "streams), `submit` (submit, cancel), `admin` (replay, purge, keys; implies the others). "
    "Each operation lists the scope it needs."
)


def requires(scope: Scope) -> Callable[[F], F]:
    """The route needs a key with ``scope`` (``admin`` implies every scope)."""

    def decorate(func: F) -> F:
        setattr(func, SCOPE_ATTRIBUTE, scope)
        func = documented(ErrorEnvelope, 403)(documented(ErrorEnvelope, 401)(func))
        return security_scheme([{SCHEME: [scope.value]}])(func)

    return decorate


def open_route(func: F) -> F:
    """The route needs no key (health: load balancers and probes carry none)."""
    setattr(func, SCOPE_ATTRIBUTE, OPEN)
    return security_scheme([])(func)


def scope_of(view: Callable[..., object] | None, method: str) -> Scope | str:
    """The scope a view needs, or ``OPEN``."""
    declared = getattr(view, SCOPE_ATTRIBUTE, None)
    if isinstance(declared, Scope) or declared == OPEN:
        return declared
    return Scope.READ if method in ("GET", "HEAD") else Scope.ADMIN


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request: the key (if a known, live one was presented) and the address."""

    address: str
    key: ApiKey | None = None
    presented: bool = False
    """An ``Authorization`` header was sent (a key that turned out unknown, revoked or malformed)."""

    @property
    def who(self) -> str:
        """As replay records keep it: ``key:NAME``, else ``api ADDRESS``."""
        return f"key:{self.key.name}" if self.key else f"api {self.address}"

    @property
    def bucket(self) -> str:
        """The rate limiter's key: the key's name, else the address."""
        return f"key:{self.key.name}" if self.key else f"ip:{self.address}"


@dataclass(kw_only=True)
class KeyCache:
    """Key lookups by hash, remembered ``ttl`` seconds (found or not)."""

    keys: KeyStore
    ttl: float = limits.KEY_CACHE_SECONDS
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[float, ApiKey | None]] = field(default_factory=dict)

    async def lookup(self, secret: str) -> ApiKey | None:
        digest = key_hash(secret)
        now = self.clock()
        hit = self._seen.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self.keys.find_key(digest)
        if len(self._seen) > 10_000:
            self._seen = {k: v for k, v in self._seen.items() if v[0] > now}
        self._seen[digest] = (now + self.ttl, found)
        return found

    def forget(self) -> None:
        """Drop every remembered lookup (this process revoked a key)."""
        self._seen.clear()


@dataclass(kw_only=True)
class Auth:
    """The two hooks, for one app."""

    settings: Settings
    keys: KeyCache
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def required(self) -> bool:
        return self.settings.auth == "required"

    def install(self, app: Quart, *, between: Callable[[Quart], object]) -> None:
        """``identify`` before the hooks ``between`` installs (the rate limiter), then
        ``authorize``."""
        app.before_request(self.identify)
        between(app)
        app.before_request(self.authorize)

    async def identify(self) -> None:
        header = request.headers.get("Authorization")
        key: ApiKey | None = None
        if header is not None:
            secret = bearer_token(header)
            if secret is not None:
                try:
                    key = await self.keys.lookup(secret)
                except StoreError:
                    if self.required and self._needs_key():
                        raise  # 503 with Retry-After: no key can be checked now
                if key is not None and not key.active:
                    key = None
        g.taskflow_caller = Caller(
            address=client_address(request.remote_addr, request.headers, self.trusted),
            key=key,
            presented=header is not None,
        )

    def _needs_key(self) -> bool:
        view = current_app.view_functions.get(request.endpoint or "")
        return request.endpoint not in OPEN_ENDPOINTS and scope_of(view, request.method) != OPEN

    async def authorize(self) -> None:
        if not self.required or request.endpoint is None:  # unknown route: the 404 says so
            return
        view = current_app.view_functions.get(request.endpoint)
        needed = scope_of(view, request.method)
        if needed == OPEN or request.endpoint in OPEN_ENDPOINTS:
            return
        assert isinstance(needed, Scope)
        caller = current_caller()
        if caller.key is None:
            if caller.presented:
                message = "The API key is unknown or revoked (Authorization: Bearer <key>)."
                challenge = f'{REALM}, error="invalid_token"'
            else:
                message = "This route needs an API key: send Authorization: Bearer <key>."
                challenge = REALM
            raise ApiError(
                401,
                "unauthorized",
                message,
                details={"required_scope": needed.value},
                headers={"WWW-Authenticate": challenge},
            )
        if not caller.key.allows(needed):
            raise ApiError(
                403,
                "forbidden",
                f"The key {caller.key.name!r} lacks the {needed.value!r} scope this route needs.",
                details={
                    "required_scope": needed.value,
                    "key_scopes": sorted(s.value for s in caller.key.scopes),
                },
                headers={
                    "WWW-Authenticate": f'{REALM}, error="insufficient_scope", '
                    f'scope="{needed.value}"'
                },
            )


def bearer_token(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        return None
    return token


def client_address(
    peer: str | None,
    headers: Headers,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the last
    address of ``X-Forwarded-For`` that is not a trusted proxy (the one the nearest proxy
    saw). An untrusted peer's ``X-Forwarded-For`` is ignored (anyone can send one)."""
    address = peer or "unknown"
    if not trusted or not _trusted(address, trusted):
        return address
    forwarded = headers.getlist("X-Forwarded-For")
    hops = [h.strip() for line in forwarded for h in line.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop if _is_ip(hop) else address
        address = hop
    return address


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _trusted(
    address: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def current_caller() -> Caller:
    caller = g.get("taskflow_caller")
    if isinstance(caller, Caller):
        return caller
    return Caller(address=request.remote_addr or "unknown")


def make_auth(settings: Settings, keys: KeyStore) -> Auth:
    return Auth(
        settings=settings, keys=KeyCache(keys=keys), trusted=networks(settings.trusted_proxies)
    )
