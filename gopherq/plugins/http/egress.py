"""The HTTP executor's egress guard: which addresses tasks may call, checked on every request and redirect hop.

A task queue that calls URLs taken from its tasks is a server-side request forgery risk: whoever can enqueue can
make the worker call the cloud metadata service or an internal admin port. The guard resolves each request's host
and refuses the request (a permanent failure, reason `egress_denied`) when any address is refused: always for the
unspecified addresses (0.0.0.0/8, ::), then for a `deny` network (by default link-local, where metadata services
answer), a private or reserved range with `deny_private = true` (the table in `egress_ranges`), or, with an
allow-list, an address outside it. An IPv6 address that spells an IPv4 one (NAT64, 6to4, Teredo, ...) is judged
as that IPv4 address too, so no spelling of a denied address passes.

The guard also pins: the addresses it checked for a host are the only ones any transport connects to (the native
one asks `addresses` itself, aiohttp through `aiohttp_transport.PinnedResolver`, httpx's own through
`httpx_transport.PinnedBackend`; none resolves on its own), so a DNS server that answers differently between the
check and the connection (DNS rebinding) cannot steer a request elsewhere. Host header and TLS SNI stay the host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import time
from collections.abc import Awaitable, Callable

from pydantic import Field, field_validator

from gopherq import PermanentFailure, PluginSettings
from gopherq.plugins.http.egress_ranges import (
    ALWAYS_DENIED,
    DEFAULT_DENY,
    PRIVATE,
    Address,
    Network,
    embedded_ipv4,
    find,
    normalise,
)


class EgressSettings(PluginSettings):
    """`[plugins.http.egress]`: the networks HTTP tasks may and may not reach."""

    deny: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY), description="networks never called")
    allow: list[str] = Field(default_factory=list, description="when non-empty, the only networks called")
    deny_private: bool = Field(
        False, description="also deny loopback, private and every reserved range (egress_ranges.PRIVATE)"
    )
    dns_cache_seconds: float = Field(30.0, ge=0, description="how long a host's resolved addresses are reused")

    @field_validator("deny", "allow")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)") from None
        return values


#: Resolves a host name to addresses (text); None when it does not resolve. Tests pass their own.
Lookup = Callable[[str], Awaitable[list[str] | None]]


async def system_lookup(host: str) -> list[str] | None:
    """The system resolver's addresses for a host name."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return None  # the request itself will fail with a connect error, which is retried
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


class EgressGuard:
    """Decides whether a host may be called; resolves names (with a small cache) to check their addresses, and
    remembers the checked addresses of each host for the connection to use (`pinned`)."""

    def __init__(self, settings: EgressSettings, lookup: Lookup = system_lookup) -> None:
        self.lookup = lookup
        #: host -> the addresses its last check allowed; the only addresses a pinned connection may use.
        self.pinned: dict[str, list[Address]] = {}
        self.deny: list[Network] = [ipaddress.ip_network(n, strict=False) for n in settings.deny]
        self.allow: list[Network] = [ipaddress.ip_network(n, strict=False) for n in settings.allow]
        self.deny_private = settings.deny_private
        self.cache_seconds = settings.dns_cache_seconds
        #: host -> (valid until, monotonic; why it is refused, or None). An IP literal's verdict never changes;
        #: a name's lasts as long as its resolved addresses are trusted (dns_cache_seconds).
        self._verdicts: dict[str, tuple[float, str | None]] = {}

    def refusal(self, address: Address) -> str | None:
        """Why `address` may not be called, or None when it may. An IPv6 address that embeds IPv4 addresses is
        refused when it, or any address it embeds, would be."""
        address = normalise(address)
        reason = self._own_refusal(address)
        if reason is not None:
            return reason
        for form, embedded in embedded_ipv4(address):
            reason = self._own_refusal(embedded)
            if reason is not None:
                return f"{address} embeds {embedded} ({form}), and {reason}"
        return None

    def _own_refusal(self, address: Address) -> str | None:
        row = find(address, ALWAYS_DENIED)
        if row is not None:
            return f"{address} is {row.reason}: never called"
        for network in self.deny:
            if address.version == network.version and address in network:
                return f"{address} is in denied network {network}"
        if self.deny_private:
            row = find(address, PRIVATE)
            if row is not None:
                return f"{address} is not a public address: {row.network} is {row.reason} (deny_private = true)"
        if self.allow and not any(address.version == n.version and address in n for n in self.allow):
            return f"{address} is outside the allowed networks"
        return None

    async def resolve(self, host: str) -> list[Address] | None:
        """The addresses a host name resolves to (in the resolver's order); None when it does not resolve."""
        found = await self.lookup(host)
        if found is None:
            return None
        return list(dict.fromkeys(ipaddress.ip_address(address) for address in found))

    async def addresses(self, host: str) -> list[Address]:
        """The addresses a new connection to `host` may use: the ones its last check allowed (checking first when
        there is none, which raises PermanentFailure(reason='egress_denied') when `host` is refused); empty when
        the name does not resolve. Both transports connect through this and nothing else, so what they reach is
        what the guard judged."""
        literal = _literal(host)
        if literal is not None:
            await self.check(host)  # an IP literal's verdict is cached for good: this costs a dict lookup
            return [literal]
        found = self.pinned.get(host)
        if found is None:
            await self.check(host)
            found = self.pinned.get(host)
        return found or []

    async def check(self, host: str) -> None:
        """Raise PermanentFailure(reason='egress_denied') when `host` resolves to an address it may not call."""
        now = time.monotonic()
        verdict = self._verdicts.get(host)
        if verdict is None or verdict[0] <= now:
            literal = _literal(host)
            found = [literal] if literal is not None else await self.resolve(host)
            reason = next((r for r in map(self.refusal, found or []) if r is not None), None)
            until = math.inf if literal is not None else now + self.cache_seconds
            if literal is None and found and reason is None:
                if len(self.pinned) >= 4096 and host not in self.pinned:
                    self.pinned.clear()
                self.pinned[host] = found
            elif literal is None:
                self.pinned.pop(host, None)
            if found is not None and until > now:
                if len(self._verdicts) >= 4096:  # hosts come from tasks: never let them pile up
                    self._verdicts.clear()
                self._verdicts[host] = (until, reason)
            verdict = (until, reason)
        if verdict[1] is not None:
            raise PermanentFailure(f"egress denied for host {host}: {verdict[1]}", reason="egress_denied")


def _literal(host: str) -> Address | None:
    """The address an IP-literal host names (brackets allowed), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
