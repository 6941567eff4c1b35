"""Origins a publishable widget key answers: exact `scheme://host[:port]`, or
`scheme://*.domain[:port]` for any subdomain of `domain` (at any depth, not `domain` itself).

Scheme, host and port are compared after normalising (lower case, the scheme's default port
dropped); a browser's `Origin` header is never a path, so anything else is not an origin."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_ORIGIN = re.compile(r"^(?P<scheme>[a-z]+)://(?P<host>[^/:?#@\s]+)(:(?P<port>[0-9]{1,5}))?$")


class OriginInvalid(ValueError):
    """Not an origin or origin pattern; the message says what is wrong with it."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        default = _DEFAULT_PORTS[self.scheme] == self.port
        return (
            f"{self.scheme}://{self.host}"
            if default
            else f"{self.scheme}://{self.host}:{self.port}"
        )


@dataclass(frozen=True)
class OriginPattern:
    """An exact origin, or (`any_subdomain`) every origin whose host ends in `.<host>`."""

    origin: Origin
    any_subdomain: bool

    def __str__(self) -> str:
        text = str(self.origin)
        return text.replace("://", "://*.", 1) if self.any_subdomain else text

    def matches(self, origin: Origin) -> bool:
        if (origin.scheme, origin.port) != (self.origin.scheme, self.origin.port):
            return False
        if self.any_subdomain:
            return origin.host.endswith("." + self.origin.host)
        return origin.host == self.origin.host


def parse_origin(text: str) -> Origin:
    """A browser's `Origin` value (or an exact allowed origin) in normal form."""
    match = _ORIGIN.match(text.strip().lower())
    if match is None:
        raise OriginInvalid(
            f"{text!r} is not an origin: give scheme://host[:port], no path, no trailing slash"
        )
    scheme, host, port_text = match["scheme"], match["host"], match["port"]
    if scheme not in _DEFAULT_PORTS:
        raise OriginInvalid(f"{text!r}: the scheme must be http or https")
    if not _HOST.match(host) or len(host) > 253:
        raise OriginInvalid(f"{text!r}: {host!r} is not a host name or IPv4 address")
    port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise OriginInvalid(f"{text!r}: the port must be 1-65535")
    return Origin(scheme, host, port)


def parse_origin_pattern(text: str) -> OriginPattern:
    """`https://shop.example.com`, `http://localhost:3000` or `https://*.example.com`."""
    scheme, separator, rest = text.strip().partition("://")
    if not rest.startswith("*"):
        return OriginPattern(parse_origin(text), any_subdomain=False)
    if not rest.startswith("*.") or "*" in rest[2:]:
        raise OriginInvalid(
            f"{text!r}: a wildcard is allowed only as the first label, as in https://*.example.com"
        )
    origin = parse_origin(f"{scheme}{separator}{rest[2:]}")
    if "." not in origin.host:
        raise OriginInvalid(f"{text!r}: a wildcard needs a domain with a dot below it")
    return OriginPattern(origin, any_subdomain=True)


def origin_allowed(origin_header: str | None, patterns: list[OriginPattern]) -> bool:
    """Whether a request's `Origin` header is one of `patterns`; a missing, `null` or
    malformed Origin never is."""
    if not origin_header:
        return False
    try:
        origin = parse_origin(origin_header)
    except OriginInvalid:
        return False
    return any(pattern.matches(origin) for pattern in patterns)
