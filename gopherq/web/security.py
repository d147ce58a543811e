"""Who may use the web server and how: bind checks, authentication, CSRF, loopback Host checks, security headers.

Authentication is optional on a loopback bind and required on any other (`check_bind`). A viewer token
(`web.viewer_token`, bearer or login) reads everything and changes nothing: `authorize` refuses its unsafe requests
with 403. Three credentials are
accepted when configured: `Authorization: Bearer <token>` (API clients, scrapers), HTTP basic auth (browsers get
the native prompt) and a session cookie set by the login form (browsers with a token); web/credentials.py checks
them, in constant time. Sessions live in Redis (web/sessions.py): logout ends one for every web process, and
changing the token ends them all.

CSRF protects the credentials a browser sends on its own (cookies, basic auth, and none at all on loopback):
every unsafe request must carry, in a `csrf_token` form field or an `X-CSRF-Token` header, the token the server
derived for what its credentials are bound to: the session, the basic-auth user, or, when nobody is logged in, the
random `gopherq_csrf` cookie the server set. The token is an HMAC under a server secret, so an equal cookie and
field that an attacker plants are refused, and so is a token of another session. A request authenticated by a
bearer token needs none: no browser attaches that by itself.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gopherq.core.audit import Actor
from gopherq.core.errors import ConfigError
from gopherq.core.resilience import RETRYABLE
from gopherq.core.sections import WebSettings
from gopherq.web.credentials import ANONYMOUS, Auth, AuthMethod, Identity, same
from gopherq.web.sessions import random_id, well_formed
from gopherq.web.state import AUTH_KEY, LOGIN_PAGE_KEY, SESSIONS_KEY

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSRF_COOKIE = "gopherq_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

#: Paths anyone may read: orchestrator probes, the static files, and the login form itself.
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/static/", "/login")

#: Paths that never render a page nor take a form: no identity to establish beyond the Host check.
PLAIN_PREFIXES = ("/healthz", "/readyz", "/static/")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: the binds that need no authentication."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(cfg: WebSettings, host: str) -> None:
    """Refuse a non-loopback bind without authentication (ConfigError: one line, exit 2)."""
    if not is_loopback(host) and not cfg.auth_enabled:
        raise ConfigError(
            f"web: refusing to listen on {host} without authentication: set web.token or web.password "
            "(or bind 127.0.0.1)"
        )


#: Where `authenticate` keeps the request's Identity (a RequestKey where aiohttp has them, 3.12 and later).
IDENTITY_KEY: Any = web.RequestKey("gopherq_identity", Identity) if hasattr(web, "RequestKey") else "gopherq_identity"


def identity(request: web.Request) -> Identity:
    """The request's identity, as the `authenticate` middleware established it (ANONYMOUS when it did not)."""
    found = request.get(IDENTITY_KEY)
    return found if isinstance(found, Identity) else ANONYMOUS


def auth_method(request: web.Request) -> AuthMethod:
    """How the request authenticated ("none" when it did not, or when authentication is off)."""
    return identity(request).method


def unauthorized(request: web.Request, auth: Auth) -> web.Response:
    """401: a login page for browsers, a short text otherwise; a basic-auth challenge when a password is set."""
    headers = {"Cache-Control": "no-store"}
    if auth.password is not None:
        headers["WWW-Authenticate"] = 'Basic realm="gopherq", charset="UTF-8"'
    wants_html = "text/html" in request.headers.get("Accept", "") and request.method == "GET"
    if wants_html and auth.logins and request.app[SESSIONS_KEY].ready:
        return request.app[LOGIN_PAGE_KEY](request)  # the login page is a page like any other (web/render.py)
    return web.Response(status=401, text="401: authentication required\n", headers=headers)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer, errors included, carries the security headers; dynamic ones are never cached."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        _decorate(request, response)
        raise
    _decorate(request, response)
    return response


def _decorate(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse unauthenticated requests outside the public paths with 401. With authentication off, only loopback
    Host names are served (a DNS-rebinding page cannot talk to the unauthenticated server under its own name).
    Records the request's identity for the CSRF check and the pages, and makes sure the CSRF secret is loaded
    before any page can render a form."""
    auth = request.app[AUTH_KEY]
    if not auth.enabled and not is_loopback(request.url.host or ""):
        return web.Response(status=421, text="421: this server answers to loopback names only\n")
    if request.path.startswith(PLAIN_PREFIXES):
        return await handler(request)
    sessions = request.app[SESSIONS_KEY]
    try:
        if not request.path.startswith("/v1/"):
            await sessions.load_secret()
        found = await auth.identify(request, sessions)
    except RETRYABLE as exc:
        log.warning("%s %s: Redis unavailable: %s", request.method, request.path, exc)
        return web.Response(status=503, text=f"503: Redis unavailable ({type(exc).__name__}); retrying helps\n")
    request[IDENTITY_KEY] = found or ANONYMOUS
    if found is None and not request.path.startswith(PUBLIC_PREFIXES):
        return unauthorized(request, auth)
    return await handler(request)


def csrf_token(request: web.Request) -> tuple[str, str | None]:
    """The CSRF token the request's forms must carry, and a new per-browser cookie value when one must be set with
    `set_csrf_cookie` (only for a browser nobody has logged in with, that has none yet)."""
    sessions = request.app[SESSIONS_KEY]
    binding = identity(request).binding
    if binding is not None:
        return sessions.csrf_token(binding), None
    cookie = request.cookies.get(CSRF_COOKIE)
    new = None if well_formed(cookie) else random_id()
    return sessions.csrf_token(f"browser\0{new or cookie}"), new


def _expected_token(request: web.Request) -> str | None:
    """What an unsafe request must carry, or None when nothing can be right (no credentials and no cookie)."""
    if identity(request).binding is None and not well_formed(request.cookies.get(CSRF_COOKIE)):
        return None
    return csrf_token(request)[0]


def set_csrf_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    """HttpOnly: pages carry the token in their forms, no script needs to read the cookie."""
    response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="Strict", path="/", secure=request.secure)


@web.middleware
async def csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reject an unsafe request whose CSRF token is missing or is not the one derived for its credentials with 403.
    The `/v1` API is exempt: it accepts JSON bodies and DELETE only, which no browser sends cross-site without a
    CORS preflight (and this server grants none)."""
    if request.method in UNSAFE_METHODS and not request.path.startswith("/v1/") and auth_method(request) != "bearer":
        given = request.headers.get(CSRF_HEADER, "")
        if not given and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            field = form.get(CSRF_FIELD, "")
            given = field if isinstance(field, str) else ""
        expected = _expected_token(request)
        if expected is None or not given or not same(given, expected):
            return web.Response(status=403, text="403: missing or wrong CSRF token; reload the page and retry\n")
    return await handler(request)


def request_actor(request: web.Request) -> Actor:
    """Who acts through this request, for the audit trail (core/audit.py): `api` under /v1, else `dashboard`."""
    return Actor(identity(request).actor, "api" if request.path.startswith("/v1/") else "dashboard")


#: Unsafe requests a viewer may still make: signing in and out.
VIEWER_ALLOWED = ("/login", "/logout")


def can_act(request: web.Request) -> bool:
    """Whether the request's credentials may change anything (a viewer's may not)."""
    return identity(request).role != "viewer"


@web.middleware
async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse every unsafe request of a viewer (`web.viewer_token`) with 403: they read everything and change
    nothing, whatever the page or endpoint (one check here, not one per handler)."""
    if request.method in UNSAFE_METHODS and not can_act(request) and request.path not in VIEWER_ALLOWED:
        message = "read-only (viewer) credentials cannot change anything"
        if request.path.startswith("/v1/"):
            body = json.dumps({"error": {"reason": "forbidden", "message": message}})
            return web.Response(status=403, text=body, content_type="application/json")
        return web.Response(status=403, text=f"403: {message}\n")
    return await handler(request)


MIDDLEWARES = (security_headers, authenticate, authorize, csrf)
