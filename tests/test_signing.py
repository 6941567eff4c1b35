"""The reference verifier customers are pointed at (docs/api.md): it accepts exactly what the
documented signature contract describes, checked here against HMACs computed independently."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from src.tools.signing import verify

# signatures only: the PostgreSQL pass would only run it again.
pytestmark = pytest.mark.database_agnostic

SECRET = "whsec-signing-0123456789abcdef"
BODY = b'{"event":"session.finished"}'


def contract_signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def test_a_signature_counts_only_as_a_v1_value() -> None:
    now = int(time.time())
    good = contract_signature(SECRET, now, BODY)

    def signed(value: str) -> bool:
        return verify(SECRET, {"X-Parley-Timestamp": str(now), "X-Parley-Signature": value}, BODY)

    assert signed(f"v1={good}")
    assert signed(f"v1={'0' * 64}, v1={good}")  # one secret of two, while one rotates
    assert not signed(f"v2={good}")
    assert not signed(f"xx={good}")


def test_header_names_are_matched_in_any_case() -> None:
    now = int(time.time())
    headers = {
        "x-parley-timestamp": str(now),
        "x-parley-signature": f"v1={contract_signature(SECRET, now, BODY)}",
    }

    assert verify(SECRET, headers, BODY)


def test_a_non_ascii_signature_is_refused_not_an_error() -> None:
    now = int(time.time())
    for forged in ("v1=é" + "0" * 63, "v1=\udcff", "v1=😀"):
        headers = {"X-Parley-Timestamp": str(now), "X-Parley-Signature": forged}

        assert verify(SECRET, headers, BODY) is False
