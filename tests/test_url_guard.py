"""The URL guard: which addresses outbound calls may reach, in every spelling of them."""

from __future__ import annotations

import ipaddress

import pytest

from src.tools.url_guard import (
    UrlAllowlist,
    UrlRefused,
    check_literal_host,
    ip_literal,
    is_public,
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
