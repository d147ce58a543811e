"""Dashboard sessions and CSRF against an attacker, over real HTTP on loopback with the real aiohttp application: a
planted cookie/field pair, another session's token, a cookie kept after logout, a token from before a token change,
an anonymous pair used on a basic-auth browser, and two web processes sharing one Redis."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession, CookieJar
from aiohttp.test_utils import TestServer

from gopherq.core.connection import RedisConnection
from gopherq.core.settings import Settings
from gopherq.web import create_app
from gopherq.web.security import CSRF_COOKIE
from gopherq.web.sessions import SESSION_COOKIE, SESSION_PREFIX
from tests.support.common import free_port

TOKEN = "hostile-sessions-token-0123456789"
PLANTED = "A" * 43  # well-formed, as an attacker who read the cookie format would make it


class Browser:
    """One browser (its own cookie jar) against one running application."""

    def __init__(self, server: TestServer, queue: str) -> None:
        self.server = server
        self.queue = queue
        self.session = ClientSession(cookie_jar=CookieJar(unsafe=True))

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def cookie(self, name: str) -> str | None:
        found = self.session.cookie_jar.filter_cookies(self.server.make_url("/")).get(name)
        return found.value if found is not None else None

    def plant(self, **cookies: str) -> None:
        self.session.cookie_jar.update_cookies(cookies, self.server.make_url("/"))

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.session.get(self.url(path), allow_redirects=False, **kwargs) as response:
            return response.status, await response.text()

    async def post(self, path: str, data: dict[str, str], **kwargs: Any) -> int:
        async with self.session.post(self.url(path), data=data, allow_redirects=False, **kwargs) as response:
            return response.status

    async def form_token(self, path: str = "/login", **kwargs: Any) -> str:
        status, body = await self.get(path, **kwargs)
        match = re.search(r'name="csrf_token" value="([^"]+)"', body)
        assert match, (status, body[:300])
        return match.group(1)

    async def login(self) -> str:
        """Log in with the token; returns the session cookie."""
        assert await self.post("/login", {"token": TOKEN, "csrf_token": await self.form_token(), "next": "/"}) == 303
        cookie = self.cookie(SESSION_COOKIE)
        assert cookie is not None
        return cookie

    async def pause(self, token: str, **kwargs: Any) -> int:
        return await self.post(f"/queues/{self.queue}/pause", {"csrf_token": token}, **kwargs)


class Site:
    def __init__(self, server: TestServer, settings: Settings, opened: list[Browser]) -> None:
        self.server = server
        self.settings = settings
        self._opened = opened

    def browser(self) -> Browser:
        browser = Browser(self.server, self.settings.queue.name)
        self._opened.append(browser)
        return browser


@pytest.fixture
async def site(make_settings: Callable[..., Settings], aredis: aioredis.Redis) -> AsyncIterator[Callable[..., Any]]:
    """`await site(web={...})`: the dashboard on 127.0.0.1 over the test's Redis (sessions live 60 s)."""
    servers: list[TestServer] = []
    browsers: list[Browser] = []

    async def start(redis_client: Any = None, **sections: Any) -> Site:
        web = {"session_ttl": 60, **sections.pop("web", {})}
        settings = make_settings(web=web, **sections)
        server = TestServer(create_app(settings, redis_client or aredis), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Site(server, settings, browsers)

    yield start
    for browser in browsers:
        await browser.session.close()
    for server in servers:
        await server.close()


async def paused(aredis: aioredis.Redis, queue: str) -> bool:
    return bool(await aredis.exists(f"gopherq:{{{queue}}}:paused"))


async def test_a_planted_equal_cookie_and_field_are_refused(site: Callable[..., Any], aredis: aioredis.Redis) -> None:
    app = await site()  # loopback, no authentication: the CSRF token is all that guards the forms
    victim = app.browser()
    victim.plant(**{CSRF_COOKIE: PLANTED})
    assert await victim.pause(PLANTED) == 403  # the double-submit pair an attacker can plant
    assert await victim.pause(PLANTED, headers={"X-CSRF-Token": PLANTED}) == 403
    assert not await paused(aredis, app.settings.queue.name)
    # The token is derived from the cookie, so the same planted cookie with the server's token works: the attacker
    # lacks only what it cannot get, the token the server computes for that cookie.
    token = await victim.form_token(f"/queues/{app.settings.queue.name}")
    assert token != PLANTED and victim.cookie(CSRF_COOKIE) == PLANTED
    assert await victim.pause(token) == 303
    assert await paused(aredis, app.settings.queue.name)


async def test_a_token_handed_to_one_browser_is_refused_with_another_browsers_cookie(site: Callable[..., Any]) -> None:
    app = await site()
    first, second = app.browser(), app.browser()
    page = f"/queues/{app.settings.queue.name}"
    token = await first.form_token(page)
    await second.form_token(page)  # the second browser has a cookie of its own
    assert first.cookie(CSRF_COOKIE) != second.cookie(CSRF_COOKIE)
    assert await second.pause(token) == 403
    assert await first.pause(token) == 303


async def test_a_token_from_another_session_is_refused(site: Callable[..., Any], aredis: aioredis.Redis) -> None:
    app = await site(web={"token": TOKEN})
    alice, mallory = app.browser(), app.browser()
    await alice.login()
    await mallory.login()
    alices = await alice.form_token("/")
    mallorys = await mallory.form_token("/")
    assert alices != mallorys
    assert await alice.pause(mallorys) == 403  # a token lifted from another session
    assert not await paused(aredis, app.settings.queue.name)
    assert await alice.pause(alices) == 303
    # The form token a browser got before logging in does not carry over to its session.
    late = app.browser()
    before = await late.form_token()
    await late.login()
    assert await late.pause(before) == 403


async def test_logout_ends_the_session_on_the_server(site: Callable[..., Any], aredis: aioredis.Redis) -> None:
    app = await site(web={"token": TOKEN})
    browser = app.browser()
    cookie = await browser.login()
    key = SESSION_PREFIX + hashlib.sha256(cookie.encode()).hexdigest()
    assert 0 < await aredis.ttl(key) <= 60  # web.session_ttl
    assert [k async for k in aredis.scan_iter(match=f"*{cookie}*")] == []  # Redis never holds the cookie itself
    token = await browser.form_token("/")
    assert await browser.post("/logout", {"csrf_token": token}) == 303
    assert not await aredis.exists(key)

    thief = app.browser()  # kept a copy of the cookie
    thief.plant(**{SESSION_COOKIE: cookie})
    assert (await thief.get("/"))[0] == 401
    status, body = await thief.get("/", headers={"Accept": "text/html"})
    assert status == 401 and 'action="/login"' in body  # a browser is sent to the login form
    assert await thief.pause(token) == 401  # and the old session's token is worth nothing with it


async def test_sessions_and_csrf_tokens_are_shared_by_every_web_process(
    site: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    one = await site(web={"token": TOKEN})
    two = await site(web={"token": TOKEN})  # a second process behind the same balancer, on the same Redis
    browser = one.browser()
    cookie = await browser.login()
    token = await browser.form_token("/")
    elsewhere = two.browser()
    elsewhere.plant(**{SESSION_COOKIE: cookie})
    assert (await elsewhere.get("/"))[0] == 200
    assert await elsewhere.pause(token) == 303  # a form rendered by one process is accepted by the other
    assert await elsewhere.post("/logout", {"csrf_token": token}) == 303  # logging out on the second ...
    assert (await browser.get("/"))[0] == 401  # ... ends the session on the first


async def test_changing_the_token_ends_every_session(site: Callable[..., Any]) -> None:
    before = await site(web={"token": TOKEN})
    browser = before.browser()
    cookie = await browser.login()
    after = await site(web={"token": TOKEN + "-rotated"})  # restarted with a new token
    returning = after.browser()
    returning.plant(**{SESSION_COOKIE: cookie})
    assert (await returning.get("/"))[0] == 401


async def test_a_login_starts_a_new_session_whatever_cookie_was_planted(
    site: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    app = await site(web={"token": TOKEN})
    browser = app.browser()
    browser.plant(**{SESSION_COOKIE: PLANTED})
    assert (await browser.get("/"))[0] == 401  # a made-up session id is nobody's session
    cookie = await browser.login()
    assert cookie != PLANTED  # session fixation: the attacker's id never becomes a session
    assert not await aredis.exists(SESSION_PREFIX + hashlib.sha256(PLANTED.encode()).hexdigest())


async def test_an_anonymous_pair_is_refused_for_a_basic_auth_browser(
    site: Callable[..., Any], aredis: aioredis.Redis
) -> None:
    app = await site(web={"token": TOKEN, "password": "basic-secret-42"})
    credentials = {"Authorization": "Basic " + base64.b64encode(b"admin:basic-secret-42").decode()}
    # Anyone can fetch the public login page and get a cookie with its token ...
    stranger = app.browser()
    anonymous = await stranger.form_token()
    planted = stranger.cookie(CSRF_COOKIE)
    assert planted is not None
    # ... and plant that pair in a browser that sends basic credentials on its own: refused.
    victim = app.browser()
    victim.plant(**{CSRF_COOKIE: planted})
    assert await victim.pause(anonymous, headers=credentials) == 403
    assert not await paused(aredis, app.settings.queue.name)
    own = await victim.form_token(f"/queues/{app.settings.queue.name}", headers=credentials)
    assert own != anonymous
    assert await victim.pause(own, headers=credentials) == 303


async def test_a_session_cookie_when_redis_is_down_is_a_503_not_a_login(
    site: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    connection = RedisConnection(make_settings(redis={"url": f"redis://127.0.0.1:{free_port()}/0"}), "client")
    app = await site(redis_client=await connection.open(), web={"token": TOKEN})
    try:
        browser = app.browser()
        browser.plant(**{SESSION_COOKIE: PLANTED})
        status, body = await browser.get("/", headers={"Accept": "text/html"})
        assert status == 503 and body.startswith("503: Redis unavailable")
        assert (await browser.get("/healthz"))[0] == 200  # the probes need no Redis
    finally:
        await connection.close()
