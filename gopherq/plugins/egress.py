"""The HTTP executor's egress guard: which addresses tasks may call, checked on every request and redirect hop.

A task queue that calls URLs taken from its tasks is a server-side request forgery risk: whoever can enqueue can
make the worker call the cloud metadata service or an internal admin port. The guard resolves each request's host
and refuses the request (a permanent failure, reason `egress_denied`) when any address is in a denied network or,
with an allow-list, outside it. By default only the link-local range (where cloud metadata services live) and
`0.0.0.0/8` are denied; `deny_private = true` also denies loopback and private ranges.

Known limit: the check resolves the name itself, and the HTTP client resolves it again to connect; a DNS server
that answers differently the second time (DNS rebinding) is not caught. Pin hosts by IP, or use an egress proxy,
where that matters.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from pydantic import Field, field_validator

from gopherq import PermanentFailure, PluginSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Link-local (cloud metadata at 169.254.169.254 and fd00:ec2::254's neighbours), "this network", and the
#: AWS IPv6 metadata address.
DEFAULT_DENY = ["169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "fd00:ec2::254/128"]


class EgressSettings(PluginSettings):
    """`[plugins.http.egress]`: the networks HTTP tasks may and may not reach."""

    deny: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY), description="networks never called")
    allow: list[str] = Field(default_factory=list, description="when non-empty, the only networks called")
    deny_private: bool = Field(False, description="also deny loopback, private, link-local and unique-local ranges")
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


def _normalise(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class EgressGuard:
    """Decides whether a host may be called; resolves names (with a small cache) to check their addresses."""

    def __init__(self, settings: EgressSettings) -> None:
        self.deny: list[Network] = [ipaddress.ip_network(n, strict=False) for n in settings.deny]
        self.allow: list[Network] = [ipaddress.ip_network(n, strict=False) for n in settings.allow]
        self.deny_private = settings.deny_private
        self.cache_seconds = settings.dns_cache_seconds
        self._cache: dict[str, tuple[float, list[Address]]] = {}
        #: The verdict on each IP-literal host seen (None: may be called); it never changes, so it is kept
        #: until the table is full, then the table starts again.
        self._literal_verdicts: dict[str, str | None] = {}

    def refusal(self, address: Address) -> str | None:
        """Why `address` may not be called, or None when it may."""
        address = _normalise(address)
        for network in self.deny:
            if address.version == network.version and address in network:
                return f"{address} is in denied network {network}"
        if self.deny_private and (address.is_private or address.is_loopback or address.is_link_local):
            return f"{address} is a private address (deny_private = true)"
        if self.allow and not any(address.version == n.version and address in n for n in self.allow):
            return f"{address} is outside the allowed networks"
        return None

    async def addresses(self, host: str) -> list[Address]:
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        cached = self._cache.get(host)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return []  # the request itself will fail with a connect error, which is retried
        found = list({ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos})
        if self.cache_seconds:
            self._cache[host] = (now + self.cache_seconds, found)
        return found

    async def check(self, host: str) -> None:
        """Raise PermanentFailure(reason='egress_denied') when `host` resolves to an address it may not call."""
        if host in self._literal_verdicts:
            reason = self._literal_verdicts[host]
        else:
            reason = None
            for address in await self.addresses(host):
                reason = self.refusal(address)
                if reason is not None:
                    break
            if _is_literal(host):
                if len(self._literal_verdicts) >= 4096:
                    self._literal_verdicts.clear()
                self._literal_verdicts[host] = reason
        if reason is not None:
            raise PermanentFailure(f"egress denied for host {host}: {reason}", reason="egress_denied")


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
