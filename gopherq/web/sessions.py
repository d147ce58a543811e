"""Dashboard logins and the CSRF secret, kept in Redis: every web process behind a balancer sees a login, and a
logout, at once, and accepts the CSRF tokens the others hand out.

A login creates a session: a random id in the browser's cookie, and in Redis the key `gopherq:web:session:<sha256 of
the id>` (so a copy of Redis holds no usable cookie), expiring after `web.session_ttl`. Its value is a fingerprint of
the token the browser logged in with, so changing `web.token` ends every session. Logout deletes the key: the old
cookie is worth nothing afterwards, whoever kept a copy.

CSRF tokens are HMACs, under one server secret, of what the request's credentials are bound to (the session id, the
basic-auth user, or a random per-browser cookie when nobody has logged in): a cookie an attacker plants cannot be
paired with a token without the secret. The secret is created once, by the first web process, with SET NX under
`gopherq:web:secret`, and read by all of them: a secret per process would refuse, behind a balancer, a form that
another process rendered. Deleting the key (and restarting the web processes) rotates it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import TypeVar

from gopherq.core.redis_client import RedisClient

R = TypeVar("R", bound=str)

SECRET_KEY = "gopherq:web:secret"
#: The cookie that carries a session id to the browser that logged in.
SESSION_COOKIE = "gopherq_session"
SESSION_PREFIX = "gopherq:web:session:"

#: What a session id or a per-browser CSRF cookie looks like (secrets.token_urlsafe(32)); anything else is ignored
#: without asking Redis.
_RANDOM_ID = re.compile(r"^[A-Za-z0-9_-]{43}\Z")


def random_id() -> str:
    return secrets.token_urlsafe(32)


def well_formed(value: str | None) -> bool:
    return value is not None and _RANDOM_ID.match(value) is not None


def _fingerprint(credential: str) -> str:
    return hashlib.sha256(b"gopherq-web-login\0" + credential.encode()).hexdigest()


class Sessions:
    """The sessions and the CSRF secret of one web application, on its Redis client."""

    def __init__(self, redis: RedisClient, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._secret: bytes | None = None

    @property
    def ready(self) -> bool:
        """Whether the CSRF secret is loaded (tokens can be derived)."""
        return self._secret is not None

    @staticmethod
    def _key(session_id: str) -> str:
        return SESSION_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()

    async def load_secret(self) -> None:
        """Read the shared CSRF secret (creating it if no web process has yet); once per process."""
        while self._secret is None:
            await self.redis.set(SECRET_KEY, secrets.token_hex(32), nx=True)
            value = await self.redis.get(SECRET_KEY)
            if value is not None:  # None only if someone deleted it between the two commands: create it again
                self._secret = value if isinstance(value, bytes) else str(value).encode()

    def csrf_token(self, binding: str) -> str:
        """The CSRF token of `binding` (see the module docstring); `load_secret` must have run."""
        assert self._secret is not None, "Sessions.load_secret() first"
        return hmac.new(self._secret, binding.encode(), hashlib.sha256).hexdigest()

    async def start(self, credential: str) -> str:
        """A new session for a browser that logged in with `credential`; returns its id (the cookie's value)."""
        session_id = random_id()
        await self.redis.set(self._key(session_id), _fingerprint(credential), ex=self.ttl)
        return session_id

    async def valid(self, session_id: str, credential: str) -> bool:
        """Whether `session_id` is a live session opened with `credential` (a changed token ends them all)."""
        if not well_formed(session_id):
            return False
        value = await self.redis.get(self._key(session_id))
        if value is None:
            return False
        stored = value.decode() if isinstance(value, bytes) else str(value)
        return hmac.compare_digest(stored, _fingerprint(credential))

    async def role(self, session_id: str, logins: Mapping[R, str]) -> R | None:
        """The role (a key of `logins`: role -> token) whose token opened the live session `session_id`, None when
        none did (one read; a changed token ends the sessions opened with it)."""
        if not well_formed(session_id):
            return None
        value = await self.redis.get(self._key(session_id))
        if value is None:
            return None
        stored = value.decode() if isinstance(value, bytes) else str(value)
        found = None
        for name, credential in logins.items():  # every one compared: the time says nothing of which matched
            if hmac.compare_digest(stored, _fingerprint(credential)):
                found = name
        return found

    async def end(self, session_id: str) -> None:
        """Log out: the session is gone for every web process."""
        if well_formed(session_id):
            await self.redis.delete(self._key(session_id))
