"""The configured credentials (bearer token, basic-auth user and password) and how a request proves it holds one.

Tokens and passwords are compared in constant time. A session cookie is one the login form set (web/sessions.py):
it counts only while its session lives in Redis and was opened with the token configured now.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from gopherq.core.sections import WebSettings
from gopherq.web.sessions import SESSION_COOKIE, Sessions

AuthMethod = Literal["none", "bearer", "basic", "session"]

#: What a credential may do: an admin reads and acts, a viewer (`web.viewer_token`) only reads.
Role = Literal["admin", "viewer"]


def same(given: str, expected: str) -> bool:
    """Compare in constant time: how long it takes says nothing of how much of `given` was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Identity:
    """How a request authenticated, and what its CSRF token is bound to (None: the per-browser cookie). `role`:
    what it may do; `user`: the basic-auth user name, for the audit trail."""

    method: AuthMethod
    binding: str | None = None
    session: str | None = None
    role: Role = "admin"
    user: str | None = None

    @property
    def actor(self) -> str:
        """Who acts, as the audit trail records it (never a credential): the basic-auth user, or the role and how
        it signed in (there are no named tokens)."""
        if self.method == "basic":
            return f"{self.user} (basic auth)"
        if self.method == "none":
            return "anonymous (no authentication, loopback)"
        return f"{self.role} ({'token' if self.method == 'bearer' else 'login session'})"


#: A request that presented no credentials (all of them when authentication is off).
ANONYMOUS = Identity("none")


@dataclass(frozen=True, slots=True)
class Auth:
    """The configured credentials and the checks on them."""

    token: str | None
    username: str
    password: str | None
    viewer_token: str | None = None

    @classmethod
    def from_settings(cls, cfg: WebSettings) -> Auth:
        return cls(
            cfg.token.get_secret_value() if cfg.token else None,
            cfg.username,
            cfg.password.get_secret_value() if cfg.password else None,
            cfg.viewer_token.get_secret_value() if cfg.viewer_token else None,
        )

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.password is not None or self.viewer_token is not None

    @property
    def logins(self) -> dict[Role, str]:
        """The tokens a browser may log in with, by role."""
        found: dict[Role, str] = {}
        if self.token is not None:
            found["admin"] = self.token
        if self.viewer_token is not None:
            found["viewer"] = self.viewer_token
        return found

    def token_role(self, given: str) -> Role | None:
        """The role of a token, None when it is none of them (both compared, whichever matches)."""
        admin = self.token is not None and same(given, self.token)
        viewer = self.viewer_token is not None and same(given, self.viewer_token)
        return "admin" if admin else ("viewer" if viewer else None)

    def check_token(self, given: str) -> bool:
        return self.token_role(given) is not None

    async def identify(self, request: web.Request, sessions: Sessions) -> Identity | None:
        """How the request authenticated, or None when it did not (always ANONYMOUS when auth is off). A session
        cookie is looked up in Redis (RedisError propagates)."""
        if not self.enabled:
            return ANONYMOUS
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            role = self.token_role(value.strip())
            if role is not None:
                return Identity("bearer", role=role)
        if scheme.lower() == "basic" and self.password is not None and self._basic_ok(value.strip()):
            return Identity("basic", binding=f"basic\0{self.username}", user=self.username)
        cookie = request.cookies.get(SESSION_COOKIE)
        logins = self.logins
        if cookie and logins:
            role = await sessions.role(cookie, logins)
            if role is not None:
                return Identity("session", binding=f"session\0{cookie}", session=cookie, role=role)
        return None

    def _basic_ok(self, value: str) -> bool:
        assert self.password is not None
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared every time, so a wrong user name takes as long as a wrong password.
        user_ok = same(user, self.username)
        password_ok = same(password, self.password)
        return bool(sep) and user_ok and password_ok
