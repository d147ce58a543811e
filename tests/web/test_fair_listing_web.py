"""The ready listing with fair keys on the web, over real HTTP on loopback and a real Redis: `GET
/v1/queues/Q/tasks?state=ready` lists the tasks waiting in fair keys' lists with the keyless ones (each naming its
`fair_key`, `total` equal to the queue's `ready`), goes on by `next_cursor` and refuses a bad cursor with a 400;
the queue page's ready tab shows them with their key (escaped) and their own run now and delete, which act on the
task in its key's list, and its "Older" link goes on by cursor."""

from __future__ import annotations

import html
import json
import re

import pytest
import redis.asyncio as aioredis

from gopherq import AsyncClient
from gopherq.core.inspect import ready_list
from gopherq.core.keys import QueueKeys
from tests.web.test_web import Dashboard, Start, dashboard  # noqa: F401  (fixture)

HOSTILE = "<b>tenant</b> & co"


async def fill(app: Dashboard) -> dict[str, str]:
    """Two keyless tasks, two of tenant-a, one of a key with markup in its name, one high keyless: their ids."""
    async with AsyncClient(app.settings) as client:
        url = "http://127.0.0.1:9/"
        return {
            "plain0": await client.enqueue_http(url),
            "a0": await client.enqueue_http(url, fair_key="tenant-a"),
            "a1": await client.enqueue_http(url, fair_key="tenant-a"),
            "hostile": await client.enqueue_http(url, fair_key=HOSTILE),
            "plain1": await client.enqueue_http(url),
            "high": await client.enqueue_http(url, priority="high"),
        }


async def test_the_api_lists_tasks_in_fair_keys_and_goes_on_by_cursor(dashboard: Start) -> None:  # noqa: F811
    app: Dashboard = await dashboard()
    ids = await fill(app)
    queue = app.settings.queue.name
    expected = [
        (ids["high"], None),
        (ids["plain0"], None),
        (ids["plain1"], None),
        (ids["hostile"], HOSTILE),  # its name sorts before "tenant-a"; both keys start at the same turn
        (ids["a0"], "tenant-a"),
        (ids["a1"], "tenant-a"),
    ]
    status, body, _ = await app.get(f"/v1/queues/{queue}/tasks?state=ready&limit=50")
    assert status == 200
    page = json.loads(body)
    assert [(item["id"], item["fair_key"]) for item in page["items"]] == expected
    _, info, _ = await app.get(f"/v1/queues/{queue}")
    assert page["total"] == json.loads(info)["ready"] == 6 and "next_cursor" not in page

    seen: list[tuple[str, str | None]] = []
    path = f"/v1/queues/{queue}/tasks?state=ready&limit=2"
    while True:
        status, body, _ = await app.get(path)
        assert status == 200
        page = json.loads(body)
        assert page["offset"] == len(seen) and page["total"] == 6
        seen += [(item["id"], item["fair_key"]) for item in page["items"]]
        if "next_cursor" not in page:
            break
        path = f"/v1/queues/{queue}/tasks?state=ready&limit=2&cursor={page['next_cursor']}"
    assert seen == expected

    for bad in ("state=ready&cursor=nonsense", "state=running&cursor=W10"):
        status, body, _ = await app.get(f"/v1/queues/{queue}/tasks?{bad}")
        assert status == 400 and json.loads(body)["error"]["reason"] == "invalid_parameter"
        assert "cursor" in json.loads(body)["error"]["message"]


async def test_the_ready_tab_shows_keyed_tasks_with_their_own_actions(
    dashboard: Start,  # noqa: F811
    aredis: aioredis.Redis,
) -> None:
    app: Dashboard = await dashboard()
    ids = await fill(app)
    queue = app.settings.queue.name
    status, body, _ = await app.get(f"/fragments/queues/{queue}?tab=ready")
    assert status == 200
    assert "1\u20136 of 6" in body
    assert html.escape(HOSTILE, quote=False) in body and HOSTILE not in body  # escaped
    assert body.count('class="badge fair-key"') == 3
    for task_id in ids.values():
        assert f"/queues/{queue}/tasks/{task_id}/run" in body and f"/queues/{queue}/tasks/{task_id}/delete" in body

    listed = QueueKeys(queue).fair_list("d", "tenant-a")
    token = await app.csrf()
    status, _, headers = await app.post(
        f"/queues/{queue}/tasks/{ids['a1']}/run", {"csrf_token": token, "next": f"/queues/{queue}?tab=ready"}
    )
    assert status == 303 and "notice=task_run" in headers["Location"]
    assert [json.loads(raw)["id"] for raw in await aredis.lrange(listed, 0, -1)] == [ids["a1"], ids["a0"]]
    status, _, headers = await app.post(f"/queues/{queue}/tasks/{ids['a0']}/delete", {"csrf_token": token})
    assert status == 303 and "notice=task_deleted" in headers["Location"]
    status, body, _ = await app.get(f"/fragments/queues/{queue}?tab=ready")
    assert "1\u20135 of 5" in body and ids["a0"] not in body


async def test_the_ready_tab_pages_on_by_cursor_past_the_keys(
    dashboard: Start,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app: Dashboard = await dashboard()
    queue = app.settings.queue.name
    async with AsyncClient(app.settings) as client:
        tasks = [client.http("http://127.0.0.1:9/", fair_key=f"key{n:03d}") for n in range(60)]
        ids = await client.enqueue_many(tasks)
    shown: list[str] = []
    path = f"/queues/{queue}?tab=ready"
    for _ in range(5):
        status, body, _ = await app.get(path)
        assert status == 200
        shown += re.findall(rf'href="/queues/{queue}/tasks/([^"/]+)">', body)
        older = re.search(r'href="([^"]*tab=ready&(?:amp;)?cursor=[^"]+)">Older', body)
        if older is None:
            break
        path = html.unescape(older.group(1))
        if shown:
            assert "\u2190 First" in body or len(shown) == 25  # back to the head from a page reached by cursor
    assert shown == list(ids)
    status, body, _ = await app.get(f"/queues/{queue}?tab=ready&cursor=!!")
    assert status == 400 and "cursor" in body

    # An offset deep among the keys, past what one page may walk: an empty page whose link goes on.
    monkeypatch.setattr(ready_list, "KEYS_PER_CALL", 3)
    monkeypatch.setattr(ready_list, "CALLS", 2)
    status, body, _ = await app.get(f"/queues/{queue}?tab=ready&offset=40")
    assert status == 200 and "more may follow" in body
    older = re.search(r'href="([^"]*tab=ready&(?:amp;)?cursor=[^"]+)">Older', body)
    assert older is not None
    monkeypatch.undo()
    status, body, _ = await app.get(html.unescape(older.group(1)))
    assert re.findall(rf'href="/queues/{queue}/tasks/([^"/]+)">', body) == list(ids)[40:]
