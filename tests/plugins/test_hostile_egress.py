"""Issue 18, part 5: the egress guard judges every spelling of an address, and both transports connect only to the
addresses it checked.

The guard's verdicts are tested offline (literal addresses, and names through a resolver stub handed to the guard:
nothing is resolved or connected). The end-to-end tests run real workers and loopback servers; a tripwire on the
event loop refuses any connection that would leave loopback, so a guard that let an address through shows up as
a failed test, never as a packet sent elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from gopherq import PermanentFailure
from gopherq.client import AsyncClient
from gopherq.core.settings import Settings
from gopherq.core.task import TaskStatus
from gopherq.plugins.http import HttpExecutor, HttpSettings
from gopherq.plugins.http.egress import EgressGuard, EgressSettings
from gopherq.plugins.http.egress_ranges import DEFAULT_DENY, PRIVATE, embedded_ipv4, find
from gopherq.plugins.http.httpx_transport import PinnedHTTPTransport
from tests.plugins.test_http_extras import attempt
from tests.support.common import REPO


def refusal(address: str, **settings: Any) -> str | None:
    return EgressGuard(EgressSettings(**settings)).refusal(ipaddress.ip_address(address))


# -- the guard, offline -----------------------------------------------------------------------------------------

#: Spellings of the metadata service (169.254.169.254) and of "this host", and what the refusal must name.
DENIED_BY_DEFAULT = [
    ("169.254.169.254", "in denied network 169.254.0.0/16"),
    ("::ffff:169.254.169.254", "in denied network 169.254.0.0/16"),
    ("64:ff9b::a9fe:a9fe", "embeds 169.254.169.254 (NAT64, RFC 6052)"),
    ("::ffff:0:a9fe:a9fe", "embeds 169.254.169.254 (IPv4-translated, RFC 2765)"),
    ("::a9fe:a9fe", "embeds 169.254.169.254 (IPv4-compatible, RFC 4291)"),
    ("2002:a9fe:a9fe::1", "embeds 169.254.169.254 (6to4, RFC 3056)"),
    ("2001:0:a9fe:a9fe::1", "embeds 169.254.169.254 (Teredo server, RFC 4380)"),
    ("2001:0:4136:e378:8000:63bf:5601:5601", "embeds 169.254.169.254 (Teredo client, RFC 4380)"),
    ("2001:db8::5efe:a9fe:a9fe", "embeds 169.254.169.254 (ISATAP, RFC 5214)"),
    ("64:ff9b:1::a9fe:a9fe", "in denied network 64:ff9b:1::/48"),
    ("fe80::1", "in denied network fe80::/10"),
    ("fd00:ec2::254", "in denied network fd00:ec2::254/128"),
    ("0.0.0.0", "'this network' (RFC 791)"),
    ("0.1.2.3", "'this network' (RFC 791)"),
    ("::", "the unspecified address"),
    ("::ffff:0.0.0.0", "'this network' (RFC 791)"),
    ("64:ff9b::", "embeds 0.0.0.0 (NAT64, RFC 6052)"),
    ("::2", "embeds 0.0.0.2 (IPv4-compatible, RFC 4291)"),
]


@pytest.mark.parametrize(("address", "why"), DENIED_BY_DEFAULT)
def test_every_spelling_of_a_denied_address_is_refused_by_the_default_guard(address: str, why: str) -> None:
    reason = refusal(address)
    assert reason is not None and why in reason


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "10.0.0.1", "8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2606::1"],
)
def test_the_default_guard_lets_loopback_private_and_public_spellings_through(address: str) -> None:
    assert refusal(address) is None


@pytest.mark.parametrize("row", PRIVATE, ids=lambda row: str(row.network))
def test_deny_private_refuses_every_range_of_its_table_with_the_reason(row: Any) -> None:
    network = row.network
    judged = [a for a in (network.network_address + 1, network.broadcast_address) if find(a, PRIVATE) is row]
    assert judged  # each row decides for some of its own addresses (none is hidden behind an earlier row)
    for address in judged:
        reason = refusal(str(address), deny=[], deny_private=True)
        assert reason is not None and f"{network} is {row.reason}" in reason, (address, reason)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("::ffff:127.0.0.1", "127.0.0.0/8 is loopback"),
        ("64:ff9b::7f00:1", "embeds 127.0.0.1 (NAT64, RFC 6052)"),
        ("64:ff9b::a00:1", "embeds 10.0.0.1 (NAT64, RFC 6052)"),
        ("64:ff9b::6440:1", "100.64.0.0/10 is shared address space, carrier-grade NAT"),
        ("::7f00:1", "::/64 is reserved"),
        ("2002:7f00:1::", "2002::/16 is 6to4"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "2001::/23 is IETF protocol assignments"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("fec0::1", "site-local"),
        ("198.19.255.255", "benchmarking"),
        ("255.255.255.255", "limited broadcast"),
        ("192.0.0.8", "IETF protocol assignments"),
        ("100::1", "discard-only"),
        ("fd12:3456::1", "unique-local"),
        ("3fff::1", "documentation"),
    ],
)
def test_deny_private_judges_embedded_addresses_and_reserved_ranges(address: str, why: str) -> None:
    reason = refusal(address, deny_private=True)
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2606:4700::1"])
def test_deny_private_lets_public_destinations_through_in_any_spelling(address: str) -> None:
    """DNS64 answers with 64:ff9b::/96 on IPv6-only networks: a public IPv4 address behind it stays callable."""
    assert refusal(address, deny_private=True) is None


@pytest.mark.parametrize("address", ["0.0.0.0", "0.0.0.1", "::", "::ffff:0.0.0.0", "64:ff9b::", "2002::1"])
def test_unspecified_addresses_are_refused_whatever_the_settings(address: str) -> None:
    for settings in ({"deny": []}, {"deny": [], "allow": ["0.0.0.0/0", "::/0"]}):
        reason = refusal(address, **settings)
        assert reason is not None and "never called" in reason


def test_loopback_ipv6_is_not_read_as_an_ipv4_compatible_address() -> None:
    assert embedded_ipv4(ipaddress.IPv6Address("::1")) == []
    assert embedded_ipv4(ipaddress.IPv6Address("::")) == []
    assert refusal("::1", deny=[]) is None


def test_an_allow_list_must_hold_both_the_spelling_and_the_address_it_embeds() -> None:
    only_v4 = {"allow": ["203.0.113.0/24"]}
    assert refusal("203.0.113.7", **only_v4) is None
    assert refusal("::ffff:203.0.113.7", **only_v4) is None  # IPv4-mapped is the IPv4 address itself
    assert "64:ff9b::cb00:7107 is outside the allowed networks" in (refusal("64:ff9b::cb00:7107", **only_v4) or "")
    both = {"allow": ["203.0.113.0/24", "64:ff9b::/96"]}
    assert refusal("64:ff9b::cb00:7107", **both) is None
    assert "embeds 10.0.0.1" in (refusal("64:ff9b::a00:1", **both) or "")


def test_embedded_ipv4_names_each_form() -> None:
    def forms(address: str) -> list[tuple[str, str]]:
        return [(form.split(",")[0], str(ip)) for form, ip in embedded_ipv4(ipaddress.IPv6Address(address))]

    assert forms("64:ff9b::c000:201") == [("NAT64", "192.0.2.1")]
    assert forms("::ffff:0:c000:201") == [("IPv4-translated", "192.0.2.1")]
    assert forms("::c000:201") == [("IPv4-compatible", "192.0.2.1")]
    assert forms("2002:c000:201:1::5") == [("6to4", "192.0.2.1")]
    assert forms("2001:0:c000:201:0:0:3fff:fdfe") == [("Teredo server", "192.0.2.1"), ("Teredo client", "192.0.2.1")]
    assert forms("2001:db8:1:2:200:5efe:c000:201") == [("ISATAP", "192.0.2.1")]
    assert forms("2606:4700::1111") == []


def stub_lookup(answers: dict[str, list[str]], calls: list[str] | None = None) -> Callable[[str], Any]:
    """The guard's resolver interface, answering from `answers` (a name may be re-pointed between calls)."""

    async def lookup(host: str) -> list[str] | None:
        if calls is not None:
            calls.append(host)
        return answers.get(host)

    return lookup


async def test_a_name_is_refused_when_any_address_it_resolves_to_is() -> None:
    answers = {
        "nat64.test": ["64:ff9b::a9fe:a9fe"],
        "mixed.test": ["203.0.113.5", "::ffff:169.254.169.254"],
        "compat.test": ["::a9fe:a9fe"],
        "fine.test": ["127.0.0.1", "::1"],
    }
    calls: list[str] = []
    guard = EgressGuard(EgressSettings(), lookup=stub_lookup(answers, calls))
    for name in ("nat64.test", "mixed.test", "compat.test"):
        with pytest.raises(PermanentFailure, match=rf"egress denied for host {name}: .*169\.254\.169\.254") as denied:
            await guard.check(name)
        assert denied.value.reason == "egress_denied"
        with pytest.raises(PermanentFailure):  # the connection's question gets the same verdict
            await guard.addresses(name)
        assert name not in guard.pinned
    await guard.check("fine.test")
    assert await guard.addresses("fine.test") == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert calls.count("fine.test") == 1  # the connection used the checked answer, it did not resolve again
    assert await guard.addresses("unknown.test") == []  # no answer: a connect error (retried), not a refusal
    with pytest.raises(PermanentFailure, match=r"embeds 169\.254\.169\.254"):
        await guard.addresses("::ffff:0:a9fe:a9fe")  # literals are judged too


# -- end to end: through enqueue, and the transports' pinning ---------------------------------------------------


@pytest.fixture
async def loopback_only() -> AsyncIterator[list[Any]]:
    """Refuse (and record) every connection the test's event loop would open to anything but 127.0.0.1 or ::1.
    Both transports connect through the loop's sock_connect (aiohttp directly, httpcore through anyio)."""
    loop = asyncio.get_running_loop()
    original = loop.sock_connect
    attempted: list[Any] = []

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        if address[0] not in ("127.0.0.1", "::1"):
            attempted.append(address)
            raise OSError(f"test tripwire: refused to connect to {address[0]}")
        await original(sock, address)

    loop.sock_connect = sock_connect  # type: ignore[method-assign]
    yield attempted
    loop.sock_connect = original  # type: ignore[method-assign]


TRANSPORTS = ["native", "aiohttp", "httpx"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_embedded_spellings_fail_as_egress_denied_through_enqueue(
    transport: str,
    http: HTTPServer,
    make_settings: Callable[..., Settings],
    start_worker: Callable[..., Any],
    loopback_only: list[Any],
) -> None:
    """Every path that reaches the guard (a client's enqueue, a raw push, a redirect hop) ends the task with
    reason `egress_denied` in the worker, at send time, and nothing is sent."""
    urls = [f"http://[{address}]/latest/meta-data/" for address, _ in DENIED_BY_DEFAULT if ":" in address]
    http.expect_request("/hop").respond_with_data("", status=302, headers={"Location": "http://[::a9fe:a9fe]/x"})
    settings = make_settings(plugins={"http": {"transport": transport}})
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        ids = [await client.enqueue_http(url) for url in urls]
        for n, url in enumerate(urls):  # the seed's raw format, validated by the worker
            raw = {"id": f"raw-{n}", "method": "GET", "url": url, "header": {}, "body": ""}
            await client.redis.rpush(settings.queue.name, json.dumps(raw))
            ids.append(f"raw-{n}")
        ids.append(await client.enqueue_http(http.url_for("/hop"), follow_redirects=True))
        records = [await client.wait(task_id, timeout=20) for task_id in ids]
    for task_id, record in zip(ids, records, strict=True):
        assert record is not None and record.status is TaskStatus.FAILED, (task_id, record)
        assert record.error is not None and record.error.reason == "egress_denied", (task_id, record.error)
        assert record.attempts == 1  # refused for good: not retried
    assert "::a9fe:a9fe embeds 169.254.169.254" in (records[-1].error.message if records[-1].error else "")
    assert loopback_only == []  # the guard refused them, not the tripwire


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_deny_private_refuses_loopback_in_embedded_spellings_through_enqueue(
    transport: str, make_settings: Callable[..., Settings], start_worker: Callable[..., Any], loopback_only: list[Any]
) -> None:
    urls = ["http://[64:ff9b::7f00:1]/", "http://[::7f00:1]/", "http://[2002:7f00:1::]/", "http://[::ffff:7f00:1]/"]
    settings = make_settings(plugins={"http": {"transport": transport, "egress": {"deny_private": True}}})
    await start_worker(settings)
    async with AsyncClient(settings) as client:
        ids = [await client.enqueue_http(url) for url in urls]
        records = [await client.wait(task_id, timeout=20) for task_id in ids]
    assert [r.error.reason if r and r.error else None for r in records] == ["egress_denied"] * len(urls)
    assert loopback_only == []


@pytest.fixture
def two_servers() -> Iterator[tuple[HTTPServer, HTTPServer]]:
    """A server on 127.0.0.1 (the name's first answer) and one on ::1 at the same port (the rebound answer)."""
    for _ in range(20):
        first = HTTPServer(host="127.0.0.1", port=0)
        first.start()
        second = HTTPServer(host="::1", port=first.port)
        try:
            second.start()
        except OSError:  # that port is taken on ::1: try another pair
            first.stop()
            continue
        first.expect_request("/where").respond_with_data("checked address")
        second.expect_request("/where").respond_with_data("rebound address")
        yield first, second
        first.stop()
        second.stop()
        return
    pytest.fail("no port free on both 127.0.0.1 and ::1")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_name_rebound_to_a_denied_address_is_never_reached(
    transport: str, two_servers: tuple[HTTPServer, HTTPServer], loopback_only: list[Any]
) -> None:
    """`rebind.test` first resolves to 127.0.0.1 and is checked; then it points at ::1, which is denied. Within
    dns_cache_seconds new connections still go to the checked address; after it, the guard refuses the name. The
    server on ::1 never sees a request. (The system resolver does not know `rebind.test`: a transport that
    resolved on its own could not even reach the first server.)"""
    checked, rebound = two_servers
    answers = {"rebind.test": ["127.0.0.1"]}
    calls: list[str] = []
    egress = EgressSettings(deny=[*DEFAULT_DENY, "::1/128"], dns_cache_seconds=30)
    executor = HttpExecutor(HttpSettings(transport=transport, egress=egress), concurrency=2)
    executor.guard = EgressGuard(egress, lookup=stub_lookup(answers, calls))
    url = f"http://rebind.test:{checked.port}/where"
    try:
        first = await attempt(executor, {"url": url})
        assert first.failure is None and first.result["body"] == "checked address"
        answers["rebind.test"] = ["::1"]
        await executor.close()  # a new pool: the next request opens a new connection
        second = await attempt(executor, {"url": url})
        assert second.failure is None and second.result["body"] == "checked address"
        assert calls == ["rebind.test"]  # the verdict still holds: neither transport resolved again
        executor.guard._verdicts.clear()  # dns_cache_seconds have passed
        third = await attempt(executor, {"url": url})
        assert third.failure is not None and third.failure.reason == "egress_denied"
        assert "::1 is in denied network ::1/128" in third.failure.message
    finally:
        await executor.close()
    assert len(checked.log) == 2 and rebound.log == []
    assert all(request.headers["Host"] == f"rebind.test:{checked.port}" for request, _ in checked.log)


async def test_the_httpx_transport_checks_a_host_it_is_asked_to_connect_to(
    two_servers: tuple[HTTPServer, HTTPServer], loopback_only: list[Any]
) -> None:
    """Used on its own (no check before the request), the pinned httpx transport asks the guard, which resolves,
    judges and refuses: the denied address is not connected to."""
    import httpx

    _, rebound = two_servers
    guard = EgressGuard(EgressSettings(deny=[*DEFAULT_DENY, "::1/128"]), lookup=stub_lookup({"rebind.test": ["::1"]}))
    transport = PinnedHTTPTransport(guard, max_connections=2)
    try:
        with pytest.raises(PermanentFailure, match="::1 is in denied network"):
            await transport.handle_async_request(httpx.Request("GET", f"http://rebind.test:{rebound.port}/where"))
        with pytest.raises(PermanentFailure, match=r"embeds 169\.254\.169\.254"):
            await transport.handle_async_request(httpx.Request("GET", "http://[64:ff9b::a9fe:a9fe]/"))
    finally:
        await transport.aclose()
    assert rebound.log == [] and loopback_only == []


def test_the_documented_table_is_the_guards_table() -> None:
    """docs/guarantees.md lists exactly the ranges egress_ranges holds, with when each applies."""
    import re

    from gopherq.plugins.http.egress_ranges import ALWAYS_DENIED

    doc = (REPO / "docs" / "guarantees.md").read_text()
    section = doc[doc.index("### The egress guard") : doc.index("### Task ids and log lines")]
    rows = re.findall(r"^\| `([0-9a-f:./]+)` \| [^|]+ \| ([^|]+) \|$", section, re.MULTILINE)
    assert {network for network, when in rows if when.strip() == "always"} == {str(r.network) for r in ALWAYS_DENIED}
    assert {network for network, when in rows if "deny_private" in when} == {str(r.network) for r in PRIVATE}
    default = {network for network, when in rows if "default `deny`" in when}
    assert set(DEFAULT_DENY) - default == {"fd00:ec2::254/128"}  # a single address, named in the text
