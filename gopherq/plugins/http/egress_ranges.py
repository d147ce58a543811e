"""The address ranges the egress guard knows, each with its reason, and the IPv4 addresses an IPv6 address embeds.

One table per rule, so what the guard refuses, and why, is read in one place (docs/guarantees.md lists the same
rows): `ALWAYS_DENIED` whatever the settings say, `DEFAULT_DENY` as the `deny` setting's default, `PRIVATE` with
`deny_private = true`. Python's own `ipaddress.is_private` is not used: its list changed between Python patch
releases (3.11.10 and 3.12.4 rewrote it), and a guard must not change with the interpreter.

An IPv6 address can spell an IPv4 one (NAT64, 6to4, Teredo, ...): a packet to it ends up at that IPv4 address
through a translator or a tunnel. `embedded_ipv4` names each such address, so the guard can judge it by the IPv4
rules as well: `[64:ff9b::a9fe:a9fe]` is the metadata service at 169.254.169.254, however it is written.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Range(NamedTuple):
    """A network and why the guard treats it specially (the reason appears in the refusal message)."""

    network: Network
    reason: str


def _table(*rows: tuple[str, str]) -> tuple[Range, ...]:
    return tuple(Range(ipaddress.ip_network(network), reason) for network, reason in rows)


#: Never called, whatever `deny`, `allow` and `deny_private` say: these addresses name the local host itself
#: (Linux connects 0.0.0.0 and :: to the local host), never a destination.
ALWAYS_DENIED = _table(
    ("0.0.0.0/8", "'this network' (RFC 791): 0.0.0.0 reaches the local host"),
    ("::/128", "the unspecified address (RFC 4291): it reaches the local host"),
)

#: The default of the `deny` setting: where cloud metadata services answer (link-local, and AWS's IPv6 address),
#: and the local-use NAT64 prefix, whose embedded IPv4 address (which could be a metadata service) sits at a
#: position only the local network knows.
DEFAULT_DENY = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "64:ff9b:1::/48"]

#: Denied with `deny_private = true`: every special-purpose range of the IANA registries that is not a public
#: unicast destination. Ranges that spell IPv4 addresses and have a public use (the NAT64 well-known prefix
#: 64:ff9b::/96, which DNS64 hands out on IPv6-only networks) are judged by the address they embed instead.
PRIVATE = _table(
    ("10.0.0.0/8", "private-use (RFC 1918)"),
    ("100.64.0.0/10", "shared address space, carrier-grade NAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local, where cloud metadata services answer (RFC 3927)"),
    ("172.16.0.0/12", "private-use (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation, TEST-NET-1 (RFC 5737)"),
    ("192.88.99.0/24", "6to4 relay anycast, deprecated (RFC 7526)"),
    ("192.168.0.0/16", "private-use (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation, TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation, TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved, and the limited broadcast address 255.255.255.255 (RFC 1112, RFC 919)"),
    ("::1/128", "loopback (RFC 4291)"),
    ("::/64", "reserved: IPv4-compatible (deprecated) and IPv4-translated addresses (RFC 4291, RFC 2765)"),
    ("64:ff9b:1::/48", "local-use NAT64, whose embedded address cannot be located (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001::/23", "IETF protocol assignments: Teredo, benchmarking, ORCHID (RFC 2928)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("2002::/16", "6to4, deprecated (RFC 7526)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("fc00::/7", "unique-local (RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("fec0::/10", "site-local, deprecated (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
#: ISATAP interface identifiers (RFC 5214): 0000:5efe or 0200:5efe, then the IPv4 address, under any /64.
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)
_LOW_32 = 0xFFFFFFFF


def find(address: Address, table: tuple[Range, ...]) -> Range | None:
    """The first row of `table` whose network holds `address`."""
    for row in table:
        if address.version == row.network.version and address in row.network:
            return row
    return None


def normalise(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address itself: the socket connects over IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def embedded_ipv4(address: Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address spells, each with the name of the form, in the order judged.

    Teredo names two (the relay server and the client, whose bits are inverted); an IPv4-compatible address
    (::a.b.c.d) names one except for :: and ::1, which are IPv6's own. A network-specific NAT64 prefix chosen by
    an operator cannot be recognised from the address: such a network lists its prefix in `deny`."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    value = int(address)
    low = ipaddress.IPv4Address(value & _LOW_32)
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address in _NAT64:
        found.append(("NAT64, RFC 6052", low))
    elif address in _TRANSLATED:
        found.append(("IPv4-translated, RFC 2765", low))
    elif address in _COMPATIBLE and value > 1:
        found.append(("IPv4-compatible, RFC 4291", low))
    elif address.sixtofour is not None:
        found.append(("6to4, RFC 3056", address.sixtofour))
    elif address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo server, RFC 4380", server), ("Teredo client, RFC 4380", client)]
    elif (value >> 32) & _LOW_32 in _ISATAP_IDS:
        found.append(("ISATAP, RFC 5214", low))
    return found
