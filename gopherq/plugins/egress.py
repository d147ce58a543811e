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
import math
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
        #: host -> (valid until, monotonic; why it is refused, or None). An IP literal's verdict never changes;
        #: a name's lasts as long as its resolved addresses are trusted (dns_cache_seconds).
        self._verdicts: dict[str, tuple[float, str | None]] = {}

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

    @staticmethod
    async def resolve(host: str) -> list[Address] | None:
        """The addresses a host name resolves to; None when it does not resolve."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return None  # the request itself will fail with a connect error, which is retried
        return list({ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos})

    async def check(self, host: str) -> None:
        """Raise PermanentFailure(reason='egress_denied') when `host` resolves to an address it may not call."""
        now = time.monotonic()
        verdict = self._verdicts.get(host)
        if verdict is None or verdict[0] <= now:
            literal = _literal(host)
            found = [literal] if literal is not None else await self.resolve(host)
            reason = next((r for r in map(self.refusal, found or []) if r is not None), None)
            until = math.inf if literal is not None else now + self.cache_seconds
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
