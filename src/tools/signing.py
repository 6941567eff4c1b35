"""Signing outbound requests (tool webhooks, completion webhooks) so receivers can verify them.

Headers: `X-Parley-Timestamp: <unix seconds>` and
`X-Parley-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`, with several
comma-separated `v1=` values while a secret rotates.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

TIMESTAMP_HEADER = "X-Parley-Timestamp"
SIGNATURE_HEADER = "X-Parley-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_headers(secrets: Sequence[str], body: bytes, timestamp: int) -> dict[str, str]:
    values = ",".join(f"v1={signature(secret, timestamp, body)}" for secret in secrets)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: values}


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance_seconds: int = 300
) -> bool:
    """What a receiver does: check the timestamp is recent and one `v1=` value matches.
    Header names are matched in any case (ASGI and many frameworks lower-case them)."""
    named = {name.lower(): value for name, value in headers.items()}
    try:
        timestamp = int(named[TIMESTAMP_HEADER.lower()])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, timestamp, body).encode()
    parts = (part.strip() for part in named.get(SIGNATURE_HEADER.lower(), "").split(","))
    offered = [part.removeprefix("v1=") for part in parts if part.startswith("v1=")]
    # As bytes: compare_digest raises on non-ASCII text, and a forged header may hold any.
    return any(
        hmac.compare_digest(expected, value.encode("utf-8", "surrogateescape")) for value in offered
    )
