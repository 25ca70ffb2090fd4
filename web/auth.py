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
from urllib.parse import urlencode, urlsplit

from quart import (
    Quart,
    Response,
    current_app,
    g,
    has_request_context,
    request,
    websocket,
)
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
PAGE = "page"
"""An HTML page: needs ``read`` like a GET, but sends a browser to the login page."""
SESSION_COOKIE = "taskflow_session"
"""Where the pages keep the key a user typed once (HttpOnly, SameSite=Strict, never in a
URL); the API also accepts it, so the pages' own requests and streams carry it."""
LOGIN_PATH = "/login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SCHEME = "bearer"
OPEN_ENDPOINTS = frozenset({"openapi", "swagger_ui", "redoc_ui", "pages.static"})
"""quart-schema's own routes (the API's description, not its data) and the pages' assets."""
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


def page_route(func: F) -> F:
    """An HTML page: ``read`` when keys are required, and a redirect to the login page (not
    a 401 envelope) when the browser has no usable key."""
    setattr(func, SCOPE_ATTRIBUTE, PAGE)
    return func


def scope_of(view: Callable[..., object] | None, method: str) -> Scope | str:
    """The scope a view needs, or ``OPEN`` or ``PAGE``."""
    declared = getattr(view, SCOPE_ATTRIBUTE, None)
    if isinstance(declared, Scope) or declared in (OPEN, PAGE):
        return declared
    return Scope.READ if method in ("GET", "HEAD") else Scope.ADMIN


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request: the key (if a known, live one was presented) and the address."""

    address: str
    key: ApiKey | None = None
    presented: bool = False
    """An ``Authorization`` header was sent (a key that turned out unknown, revoked or malformed)."""
    via_cookie: bool = False
    """The key came from the pages' session cookie, not an ``Authorization`` header."""

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
        g.taskflow_caller = await self._caller(
            request.headers, request.cookies.get(SESSION_COOKIE), request.remote_addr
        )

    async def _caller(self, headers: Headers, cookie: str | None, peer: str | None) -> Caller:
        header = headers.get("Authorization")
        secret = bearer_token(header) if header is not None else None
        via_cookie = header is None and bool(cookie)
        if via_cookie:
            secret = cookie if cookie and len(cookie) <= 256 else None
        key: ApiKey | None = None
        if secret is not None:
            try:
                key = await self.keys.lookup(secret)
            except StoreError:
                if self.required and self._needs_key():
                    raise  # 503 with Retry-After: no key can be checked now
            if key is not None and not key.active:
                key = None
        return Caller(
            address=client_address(peer, headers, self.trusted),
            key=key,
            presented=header is not None or via_cookie,
            via_cookie=via_cookie,
        )

    def _needs_key(self) -> bool:
        if not has_request_context():  # a WebSocket: every one needs a key
            return True
        view = current_app.view_functions.get(request.endpoint or "")
        return request.endpoint not in OPEN_ENDPOINTS and scope_of(view, request.method) != OPEN

    async def authorize(self) -> Response | None:
        caller = current_caller()
        if caller.via_cookie and request.method not in SAFE_METHODS:
            refuse_cross_site(request.headers, self._hosts(request.host, request.remote_addr))
        if not self.required or request.endpoint is None:  # unknown route: the 404 says so
            return None
        view = current_app.view_functions.get(request.endpoint)
        needed = scope_of(view, request.method)
        if needed == OPEN or request.endpoint in OPEN_ENDPOINTS:
            return None
        if needed == PAGE:
            if caller.key is not None and caller.key.allows(Scope.READ):
                return None
            return login_redirect(request.full_path if request.query_string else request.path)
        assert isinstance(needed, Scope)
        self.check(caller, needed, htmx="HX-Request" in request.headers)
        return None

    async def check_websocket(self, needed: Scope) -> None:
        """For a WebSocket, before the handshake: ``identify`` and ``authorize`` in one
        (raises the 401/403 ``ApiError``; a cookie must come from this origin)."""
        caller = await self._caller(
            websocket.headers, websocket.cookies.get(SESSION_COOKIE), websocket.remote_addr
        )
        g.taskflow_caller = caller
        if caller.via_cookie:
            refuse_cross_site(websocket.headers, self._hosts(websocket.host, websocket.remote_addr))
        if self.required:
            self.check(caller, needed, htmx=False)

    def _hosts(self, host: str, peer: str | None) -> tuple[str, ...]:
        """The host (and port) a page of this server has: the request's ``Host``, and behind
        a trusted proxy (``TASKFLOW_TRUSTED_PROXIES``) the ``X-Forwarded-Host`` it sets."""
        hosts = [host.lower()]
        headers = request.headers if has_request_context() else websocket.headers
        forwarded = headers.get("X-Forwarded-Host")
        if forwarded and peer and _trusted(peer, self.trusted):
            hosts += [h.strip().lower() for h in forwarded.split(",") if h.strip()]
        return tuple(hosts)

    def check(self, caller: Caller, needed: Scope, *, htmx: bool) -> None:
        """Raise 401 ``unauthorized`` or 403 ``forbidden`` unless ``caller`` has ``needed``.
        An htmx request also gets ``HX-Redirect`` to the login page on a 401."""
        if caller.key is None:
            if caller.presented:
                message = "The API key is unknown or revoked (Authorization: Bearer <key>)."
                challenge = f'{REALM}, error="invalid_token"'
            else:
                message = "This route needs an API key: send Authorization: Bearer <key>."
                challenge = REALM
            headers = {"WWW-Authenticate": challenge}
            if htmx:
                headers["HX-Redirect"] = LOGIN_PATH
            raise ApiError(
                401,
                "unauthorized",
                message,
                details={"required_scope": needed.value},
                headers=headers,
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


def refuse_cross_site(headers: Headers, hosts: tuple[str, ...]) -> None:
    """A request that changes something with the session cookie (and every WebSocket that
    carries it) must come from a page of this server: its ``Origin`` names one of ``hosts``
    (host and port; the scheme is left out, since a proxy may end TLS), else
    ``Sec-Fetch-Site`` says ``same-origin``. 403 ``cross_site_request`` otherwise. The
    cookie is SameSite=Strict as well; this also covers browsers that ignore that."""
    origin = headers.get("Origin")
    if origin is not None:
        if urlsplit(origin).netloc.lower() in hosts:
            return
    elif headers.get("Sec-Fetch-Site") in (None, "same-origin"):
        return
    raise ApiError(
        403,
        "cross_site_request",
        "This request carries the pages' session cookie but comes from another site.",
        details={"origin": origin, "expected": list(hosts)},
    )


def login_redirect(target: str) -> Response:
    """A redirect to the login page that comes back to ``target`` (a path of this site)."""
    return Response("", 302, headers={"Location": f"{LOGIN_PATH}?{urlencode({'next': target})}"})


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
