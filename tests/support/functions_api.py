"""A real `/v1` API server on loopback whose settings load the test module of function tasks
(tests/support/function_targets.py): the fixtures `settings` and `api`, for tests that enqueue through every
entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gopherq import Settings
from gopherq.web import create_app
from gopherq.web.app import API_AREAS
from tests.support import function_targets as targets


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(plugins={"functions": {"modules": ["tests.support.function_targets"]}})
    targets.app.settings = settings
    return settings


@pytest.fixture
async def api(settings: Settings, aredis: aioredis.Redis) -> AsyncIterator[Callable[..., Any]]:
    """`await api("POST", path, body)` -> (status, JSON answer) from a real `/v1` server on loopback."""
    server = TestServer(create_app(settings, aredis, areas=API_AREAS), host="127.0.0.1")
    await server.start_server()
    session = ClientSession()

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with session.request(method, server.make_url(path), json=body) as response:
            return response.status, await response.json()

    yield call
    await session.close()
    await server.close()
