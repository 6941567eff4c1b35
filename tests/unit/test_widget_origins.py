"""The origins a publishable widget key answers: exact ones and `*.domain` patterns."""

from __future__ import annotations

import pytest

from src.widget.origins import OriginInvalid, origin_allowed, parse_origin_pattern

PATTERNS = [
    parse_origin_pattern("https://shop.example.org"),
    parse_origin_pattern("https://*.example.com"),
    parse_origin_pattern("http://localhost:3000"),
]


@pytest.mark.parametrize(
    "origin",
    [
        "https://shop.example.org",
        "https://SHOP.Example.org",
        "https://shop.example.org:443",
        "https://a.example.com",
        "https://a.b.example.com",
        "http://localhost:3000",
    ],
)
def test_allowed_origins_match(origin: str) -> None:
    assert origin_allowed(origin, PATTERNS)


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "",
        "null",
        "https://evil.example.com.attacker.net",
        "https://example.com",
        "https://notexample.com",
        "http://a.example.com",
        "https://a.example.com:8443",
        "http://shop.example.org",
        "https://shop.example.org.attacker.net",
        "http://localhost:3001",
        "http://localhost",
        "https://shop.example.org/",
        "https://user@shop.example.org",
    ],
)
def test_other_origins_do_not_match(origin: str | None) -> None:
    assert not origin_allowed(origin, PATTERNS)


@pytest.mark.parametrize(
    ("pattern", "normal"),
    [
        ("HTTPS://Shop.Example.com:443", "https://shop.example.com"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("https://*.Example.com", "https://*.example.com"),
        ("https://*.example.com:8443", "https://*.example.com:8443"),
        ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
    ],
)
def test_patterns_are_kept_in_normal_form(pattern: str, normal: str) -> None:
    assert str(parse_origin_pattern(pattern)) == normal


@pytest.mark.parametrize(
    "pattern",
    [
        "*",
        "https://*",
        "https://*.com",
        "https://a.*.example.com",
        "https://*example.com",
        "https://**.example.com",
        "ftp://example.com",
        "example.com",
        "https://example.com/",
        "https://example.com/path",
        "https://example.com?q=1",
        "https://example.com:0",
        "https://example.com:99999",
        "https://exa mple.com",
        "https://-bad.example.com",
    ],
)
def test_malformed_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(OriginInvalid):
        parse_origin_pattern(pattern)
