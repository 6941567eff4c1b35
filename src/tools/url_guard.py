"""Outbound URL checks: tools and webhooks may not reach loopback, private, link-local or other
non-public addresses unless the operator allows them (`PARLEY_TOOL_URL_ALLOWLIST`), and never
a cloud metadata endpoint.

`resolve_checked` resolves a URL's host once and returns the addresses it checked; callers
connect to those addresses only (`src.tools.pinned_http`), so a name that resolves to another
address a moment later (DNS rebinding) cannot steer the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services hand out cloud credentials: refused even where an allow-listed
# network includes them. AWS (IPv4, IPv6 and the ECS task credentials endpoint), GCP and
# others on 169.254.169.254; Azure's wire server; Alibaba Cloud.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "168.63.129.16",
        "100.100.100.200",
    )
)
_NAT64_PREFIXES = (
    ipaddress.ip_network("64:ff9b::/96"),  # RFC 6052 well-known prefix
    ipaddress.ip_network("64:ff9b:1::/48"),  # RFC 8215 local-use prefix
)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d (RFC 4291)
# What inet_aton accepts, and so what resolvers turn into an IPv4 address without asking DNS:
# 127.1, 0x7f000001, 2130706433, 0177.0.0.1.
_IPV4_SHORTHAND = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}", re.I)

# host, port -> every address the host resolves to.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class UrlRefused(Exception):
    """The URL is malformed or points somewhere tools may not go."""


@dataclass(frozen=True)
class UrlAllowlist:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> UrlAllowlist:
        hosts, networks = set(), []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower())
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        return host.lower() in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


@dataclass(frozen=True)
class CheckedTarget:
    """A URL's host and the addresses it resolved to, every one of them checked."""

    host: str
    addresses: tuple[IPAddress, ...]


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and reaches: IPv4-mapped (::ffff:a.b.c.d),
    IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::) or
    Teredo's client address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in prefix for prefix in _NAT64_PREFIXES):
        return low32
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: nor ::1
        return low32
    return None


def ip_literal(host: str) -> IPAddress | None:
    """The address a literal host names, in every spelling a resolver accepts without DNS
    (IPv6 in brackets or not, IPv4 in decimal, hex, octal or short form); None for a name."""
    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    if _IPV4_SHORTHAND.fullmatch(candidate):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(candidate))
        except OSError:
            return None
    return None


def is_metadata(address: IPAddress) -> bool:
    return any(a in METADATA_ADDRESSES for a in _with_embedded(address))


def is_public(address: IPAddress) -> bool:
    return all(a.is_global and not a.is_multicast for a in _with_embedded(address))


def _with_embedded(address: IPAddress) -> list[IPAddress]:
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return [address, inner]
    return [address]


def refusal(host: str, address: IPAddress, allowlist: UrlAllowlist) -> str | None:
    """Why connecting to `address` for `host` is refused ("is not a public address; ..."),
    or None if it is not.

    Metadata addresses are refused always. Otherwise an address is fine when it is public,
    when the allow-list names the host exactly, or when an allow-listed network holds it (for
    an IPv6 address carrying an IPv4 one, the allow-list may name either)."""
    if is_metadata(address):
        return "is a cloud metadata address, which tools may never reach"
    if allowlist.allows_host(host) or is_public(address):
        return None
    if any(allowlist.allows_address(a) for a in _with_embedded(address)):
        return None
    return "is not a public address; allow it with PARLEY_TOOL_URL_ALLOWLIST"


def check_url_syntax(url: str) -> str:
    """The URL's host, if it is an absolute http(s) URL with no credentials in it and, if it
    names a port, one from 1 to 65535."""
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise UrlRefused(f"the URL is malformed: {error}") from None
    try:
        port = parts.port  # parsed on access: out of range or not a number raises here
    except ValueError:
        port = 0
    if port == 0:
        raise UrlRefused("the URL's port must be a number from 1 to 65535")
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("credentials in the URL are not allowed; use headers")
    return parts.hostname


def check_literal_host(url: str, allowlist: UrlAllowlist) -> None:
    """Refuse at configuration time what is refused anyway at call time: a literal
    non-public IP (or `localhost`) that the allow-list does not permit, and any metadata
    address."""
    host = check_url_syntax(url)
    address = ip_literal(host)
    if address is None:
        if host.lower() in ("localhost", "localhost.localdomain") and not allowlist.allows_host(
            host
        ):
            raise UrlRefused(f"{host} is a loopback host; allow it with PARLEY_TOOL_URL_ALLOWLIST")
        return  # a name: resolved and checked when the tool is called
    reason = refusal(host, address, allowlist)
    if reason is not None:
        raise UrlRefused(f"{address} {reason}")


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # The scope of a link-local IPv6 address (fe80::1%eth0) is dropped: such addresses are
    # refused unless allow-listed, and then connecting without it fails rather than strays.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def resolve_checked(
    url: str, allowlist: UrlAllowlist, resolver: Resolver = system_resolver
) -> CheckedTarget:
    """At call time: resolve the host once; every address must pass `refusal`. The caller
    connects to the returned addresses only, even for an allow-listed host."""
    host = check_url_syntax(url)
    literal = ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        port = urlsplit(url).port or (443 if url.startswith("https") else 80)
        try:
            addresses = await resolver(host, port)
        except socket.gaierror as error:
            raise UrlRefused(f"cannot resolve {host}: {error.strerror}") from None
        if not addresses:
            raise UrlRefused(f"cannot resolve {host}: no addresses")
    for address in addresses:
        reason = refusal(host, address, allowlist)
        if reason is not None:
            if literal is not None:
                raise UrlRefused(f"{address} {reason}")
            raise UrlRefused(f"{host} resolves to {address}, which {reason}")
    return CheckedTarget(host=host, addresses=tuple(dict.fromkeys(addresses)))
