"""Flow steps of the built-in task types, through a real worker: function signatures get their parents' results as
first argument (a chain step its parent's value, a join the list of its parents' values; `.si()` none), and an HTTP
join with no body of its own POSTs its parents' outcomes as JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from gopherq import AsyncClient, Settings
from gopherq.canvas import chain, chord, group, http_step
from tests.support import function_targets as targets


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(plugins={"functions": {"modules": ["tests.support.function_targets"]}})
    targets.app.settings = settings
    return settings


async def test_function_signatures_receive_their_parents_results(
    settings: Settings, start_worker: Callable[..., Any]
) -> None:
    await start_worker(settings)
    async with targets.app.async_client() as client:
        # add(2, 3) = 5, then add(5, 10) = 15, then a chord of add(15, i) joined by describe(list, ...).
        canvas = chain(
            targets.add.s(2, 3),
            targets.add.s(10),
            chord(group(*[targets.add.s(i) for i in range(3)]), targets.describe.s(tags=["joined"])),
        )
        handle = await canvas.aapply(client)
        value = await handle.result(timeout=15)
        assert value["name"] == [15, 16, 17] and value["tags"] == ["joined"]
        immutable = await chain(targets.add.s(1, 1), targets.add.si(7, 8)).aapply(client)
        assert await immutable.result(timeout=15) == 15


async def test_an_http_join_without_a_body_posts_its_parents_outcomes(
    http: HTTPServer, make_settings: Callable[..., Settings], start_worker: Callable[..., Any]
) -> None:
    settings = make_settings()
    http.expect_request("/part").respond_with_json({"part": True})
    http.expect_request("/join", method="POST").respond_with_data("joined")
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        parts = group(*[http_step(http.url_for("/part"), method="GET").named(f"part{i}") for i in range(2)])
        handle = await chord(parts, http_step(http.url_for("/join")).named("join")).aapply(client, "http-join")
        view = await handle.wait(15)
        assert view.state == "succeeded"
    [join] = [request for request, _ in http.log if request.path == "/join"]
    document = json.loads(join.get_data())
    assert document["flow"] == "http-join" and document["node"] == "join"
    assert sorted(parent["node"] for parent in document["parents"]) == ["part0", "part1"]
    assert {parent["status"] for parent in document["parents"]} == {"succeeded"}
    assert "part" in document["parents"][0]["result"]["body"]  # the parent's HTTP result record


async def test_the_blocking_face_applies_a_flow_from_the_app_and_waits_for_it(
    settings: Settings, start_worker: Callable[..., Any]
) -> None:
    await start_worker(settings)

    def blocking() -> tuple[Any, str]:
        handle = chain(targets.add.s(20, 1), targets.add.s(21)).apply()  # the app's own Client
        return handle.result(timeout=15), handle.wait().state

    try:
        assert await asyncio.to_thread(blocking) == (42, "succeeded")
    finally:
        targets.app.close()
