"""Outbound URL checks: tools may not reach loopback, private, link-local or other
non-public addresses unless the operator allows them (`PARLEY_TOOL_URL_ALLOWLIST`)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


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
    non-public IP (or `localhost`) that the allow-list does not permit."""
    host = check_url_syntax(url)
    if allowlist.allows_host(host):
        return
    if host.lower() in ("localhost", "localhost.localdomain"):
        raise UrlRefused(f"{host} is a loopback host; allow it with PARLEY_TOOL_URL_ALLOWLIST")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return  # a name: resolved and checked when the tool is called
    if not is_public(address) and not allowlist.allows_address(address):
        raise UrlRefused(
            f"{address} is not a public address; allow it with PARLEY_TOOL_URL_ALLOWLIST"
        )


async def check_url_resolves_publicly(url: str, allowlist: UrlAllowlist) -> None:
    """At call time: every address the host resolves to must be public or allowed."""
    host = check_url_syntax(url)
    if allowlist.allows_host(host):
        return
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UrlRefused(f"cannot resolve {host}: {error.strerror}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not is_public(address) and not allowlist.allows_address(address):
            raise UrlRefused(
                f"{host} resolves to {address}, which is not a public address; "
                "allow it with PARLEY_TOOL_URL_ALLOWLIST"
            )
