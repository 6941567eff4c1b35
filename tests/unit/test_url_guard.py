"""The URL guard: which addresses outbound calls may reach, in every spelling of them."""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest

from src.tools.url_guard import (
    IPAddress,
    UrlAllowlist,
    UrlRefused,
    check_literal_host,
    check_url_syntax,
    ip_literal,
    is_public,
    refusal,
    resolve_checked,
)
from tests.fakes.rebinding_resolver import RebindingResolver

NOBODY = UrlAllowlist.parse([])
EVERYTHING = UrlAllowlist.parse(["0.0.0.0/0", "::/0"])


@pytest.mark.parametrize(
    ("address", "carries"),
    [
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64
        ("64:ff9b:1::a9fe:a9fe", "169.254.169.254"),  # NAT64, local-use prefix
        ("2002:a9fe:a9fe::", "169.254.169.254"),  # 6to4
        ("::169.254.169.254", "169.254.169.254"),  # IPv4-compatible
        ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("2002:0a00:0001::", "10.0.0.1"),
    ],
)
def test_ipv6_addresses_carrying_a_private_ipv4_address_are_not_public(
    address: str, carries: str
) -> None:
    assert is_public(ipaddress.ip_address(address)) is False
    with pytest.raises(UrlRefused, match=r"not a public address|cloud metadata"):
        check_literal_host(f"http://[{address}]/x", NOBODY)


def test_an_ipv6_address_carrying_a_public_ipv4_address_stays_public() -> None:
    assert is_public(ipaddress.ip_address("64:ff9b::808:808")) is True  # 8.8.8.8 via NAT64


@pytest.mark.parametrize("spelling", ["0x7f000001", "2130706433", "127.1", "0177.0.0.1"])
def test_ipv4_shorthand_is_read_as_the_resolver_reads_it(spelling: str) -> None:
    assert ip_literal(spelling) == ipaddress.ip_address("127.0.0.1")
    with pytest.raises(UrlRefused, match=r"127\.0\.0\.1 is not a public address"):
        check_literal_host(f"http://{spelling}/x", NOBODY)


def test_a_name_that_only_looks_numeric_is_a_name() -> None:
    assert ip_literal("0x7f000001.example.com") is None
    assert ip_literal("1.2.3.4.5") is None


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "fd00:ec2::254",
        "168.63.129.16",
        "100.100.100.200",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::",
        "::169.254.169.254",
        "::ffff:169.254.169.254",
        "0xa9fea9fe",
    ],
)
def test_metadata_addresses_are_refused_even_when_allow_listed(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    allowed = UrlAllowlist.parse(["0.0.0.0/0", "::/0", address])
    with pytest.raises(UrlRefused, match="cloud metadata address"):
        check_literal_host(f"http://{host}/latest/meta-data/", allowed)


async def test_an_allow_listed_name_resolving_to_a_metadata_address_is_refused() -> None:
    resolver = RebindingResolver(first="169.254.169.254", later="169.254.169.254")
    host = resolver.name("metadata")

    with pytest.raises(UrlRefused, match=r"resolves to 169\.254\.169\.254, which is a cloud"):
        await resolve_checked(f"http://{host}/", UrlAllowlist.parse([host]), resolver)


async def test_an_allow_listed_name_is_still_resolved_and_pinned_to_what_it_resolved_to() -> None:
    resolver = RebindingResolver(first="127.0.0.1", later="127.0.0.2")
    host = resolver.name("allowed")

    target = await resolve_checked(f"http://{host}:8080/", UrlAllowlist.parse([host]), resolver)

    assert target.host == host
    assert target.addresses == (ipaddress.ip_address("127.0.0.1"),)


async def test_a_name_is_refused_when_any_of_its_addresses_is_not_allowed() -> None:
    resolver = RebindingResolver(first="10.1.2.3", later="10.1.2.3")
    host = resolver.name("private")

    with pytest.raises(UrlRefused, match=r"resolves to 10\.1\.2\.3, which is not a public"):
        await resolve_checked(f"https://{host}/", UrlAllowlist.parse(["127.0.0.1"]), resolver)


async def test_allow_listed_networks_let_loopback_through_but_not_metadata() -> None:
    target = await resolve_checked("http://127.0.0.1:9/x", EVERYTHING)
    assert target.addresses == (ipaddress.ip_address("127.0.0.1"),)
    with pytest.raises(UrlRefused):
        await resolve_checked("http://169.254.169.254/x", EVERYTHING)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/x", "only http and https URLs are allowed, not 'ftp'"),
        ("example.com/x", "only http and https URLs are allowed, not 'none'"),
        ("http:///x", "the URL has no host"),
        ("https://user:pw@example.com/", "credentials in the URL are not allowed"),
        ("https://token@example.com/", "credentials in the URL are not allowed"),
        ("http://example.com:0/", "port must be a number from 1 to 65535"),
        ("http://example.com:65536/", "port must be a number from 1 to 65535"),
        ("http://example.com:http/", "port must be a number from 1 to 65535"),
        ("http://[::1/", "the URL is malformed"),
    ],
)
def test_a_url_that_is_not_a_plain_http_url_is_refused(url: str, says: str) -> None:
    with pytest.raises(UrlRefused, match=re.escape(says)):
        check_url_syntax(url)


def test_a_plain_url_gives_its_host_in_lower_case() -> None:
    assert check_url_syntax("HTTPS://Tools.Example.COM:65535/a?b=c") == "tools.example.com"
    assert check_url_syntax("http://[2001:db8::1]:8080/") == "2001:db8::1"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.localdomain"])
def test_localhost_is_refused_unless_allow_listed_by_name(host: str) -> None:
    with pytest.raises(UrlRefused, match="is a loopback host"):
        check_literal_host(f"http://{host}:8080/", NOBODY)
    check_literal_host(f"http://{host}:8080/", UrlAllowlist.parse([host.lower()]))


def test_a_name_is_left_for_call_time_when_configured() -> None:
    check_literal_host("https://internal.corp.example/", NOBODY)


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "169.254.1.1",  # link-local
        "0.0.0.0",
        "224.0.0.251",  # multicast
        "255.255.255.255",
        "fe80::1",
        "fc00::1",
        "::1",
        "::",
        "ff02::1",
        "2001:db8::1",  # documentation
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo carrying 10.0.0.1
    ],
)
def test_non_public_addresses_are_not_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address)) is True


def test_the_allow_list_reads_networks_and_host_names_in_any_case() -> None:
    allowlist = UrlAllowlist.parse([" 10.0.0.0/8 ", "", "Tools.Internal", "fd00::/8"])

    assert allowlist.allows_host("tools.internal")
    assert not allowlist.allows_host("other.internal")
    assert allowlist.allows_address(ipaddress.ip_address("10.200.0.1"))
    assert allowlist.allows_address(ipaddress.ip_address("fd12::1"))
    assert not allowlist.allows_address(ipaddress.ip_address("192.168.0.1"))


def test_an_allow_listed_ipv4_network_admits_that_address_spelled_as_ipv6() -> None:
    allowlist = UrlAllowlist.parse(["10.0.0.0/8"])

    assert refusal("h", ipaddress.ip_address("::ffff:10.1.2.3"), allowlist) is None
    assert refusal("h", ipaddress.ip_address("::ffff:192.168.0.1"), allowlist) is not None


def test_an_allow_listed_host_may_reach_a_private_address_but_no_other_host_may() -> None:
    allowlist = UrlAllowlist.parse(["tools.internal"])
    private = ipaddress.ip_address("10.0.0.5")

    assert refusal("tools.internal", private, allowlist) is None
    assert refusal("evil.example", private, allowlist) == (
        "is not a public address; allow it with PARLEY_TOOL_URL_ALLOWLIST"
    )


async def test_a_name_is_resolved_on_the_port_its_scheme_implies() -> None:
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[IPAddress]:
        asked.append((host, port))
        return [ipaddress.ip_address("93.184.215.14")]

    await resolve_checked("http://a.example/", NOBODY, resolver)
    await resolve_checked("https://b.example/", NOBODY, resolver)
    await resolve_checked("https://c.example:8443/", NOBODY, resolver)

    assert asked == [("a.example", 80), ("b.example", 443), ("c.example", 8443)]


async def test_the_addresses_a_name_resolves_to_are_returned_once_each_in_order() -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in ("93.184.215.14", "8.8.8.8", "93.184.215.14")]

    target = await resolve_checked("https://a.example/", NOBODY, resolver)

    assert target.addresses == (
        ipaddress.ip_address("93.184.215.14"),
        ipaddress.ip_address("8.8.8.8"),
    )


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def nothing(host: str, port: int) -> list[IPAddress]:
        return []

    async def unknown(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UrlRefused, match=r"cannot resolve a\.example: no addresses"):
        await resolve_checked("https://a.example/", NOBODY, nothing)
    with pytest.raises(UrlRefused, match=r"cannot resolve a\.example: Name or service not known"):
        await resolve_checked("https://a.example/", NOBODY, unknown)


async def test_a_literal_address_is_checked_without_asking_the_resolver() -> None:
    async def must_not_be_asked(host: str, port: int) -> list[IPAddress]:
        raise AssertionError(f"asked to resolve {host}")

    target = await resolve_checked("http://8.8.8.8/", NOBODY, must_not_be_asked)

    assert target.addresses == (ipaddress.ip_address("8.8.8.8"),)
    with pytest.raises(UrlRefused, match=r"^10\.0\.0\.1 is not a public address"):
        await resolve_checked("http://10.0.0.1/", NOBODY, must_not_be_asked)
