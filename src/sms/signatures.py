"""Twilio's webhook signatures (`X-Twilio-Signature`), checked with the official package.

Twilio signs the URL it posted to (PARLEY_PUBLIC_URL + the path) and every posted parameter
with the number's auth token (HMAC-SHA1); a request whose signature does not match was not
sent by Twilio, or was sent to another URL than the one configured."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


def public_url_of(public_base: str, path: str, query: str) -> str:
    """The URL Twilio posted to, as it signed it."""
    return f"{public_base}{path}" + (f"?{query}" if query else "")


def is_signed(auth_token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    return bool(signature) and RequestValidator(auth_token).validate(url, dict(params), signature)


def signature_of(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The signature Twilio would send (tests and the README's curl use it)."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))
