"""The opaque `state` of stateless conversations: JSON sealed with AES-256-GCM.

Format: `v1.<key id>.<base64url(12-byte nonce + ciphertext + tag)>`, with the version and key
id as associated data. Several keys may open states (key rotation); the first one seals.
Anything tampered, truncated, sealed with an unknown key or not a state at all is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"
_NONCE_BYTES = 12


class StateRejected(Exception):
    """The state cannot be trusted; the message says why, in words safe to show a client."""


@dataclass(frozen=True)
class StateKey:
    key_id: str
    secret: bytes


def parse_keys(setting: str) -> list[StateKey]:
    """`kid:base64key,kid2:base64key2` (32-byte keys); the first seals, all open."""
    keys = []
    for entry in (part.strip() for part in setting.split(",")):
        if not entry:
            continue
        key_id, _, encoded = entry.partition(":")
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise ValueError(f"state key {key_id!r} is not base64") from None
        if not key_id.isalnum() or len(secret) != 32:
            raise ValueError(f"state key {key_id!r}: need an alphanumeric id and 32 bytes")
        keys.append(StateKey(key_id, secret))
    return keys


def new_key_setting(key_id: str = "k1") -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip('=')}"


def dev_keys(data_dir: Path, file_name: str = "state-keys") -> list[StateKey]:
    """A key kept in the data dir, for a single machine with no key setting (dev only)."""
    path = data_dir / file_name
    create_private_file(path, new_key_setting())
    return parse_keys(path.read_text())


def create_private_file(path: Path, text: str) -> None:
    """Write `text` to a new file readable by its owner only: created with mode 0600 (never
    world-readable, not even for a moment) under a temporary name, then linked into place, so
    a concurrent reader sees the whole file or none. An existing file is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process made it first; keep theirs
    finally:
        draft.unlink()


class StateSealer:
    def __init__(self, keys: list[StateKey]) -> None:
        if not keys:
            raise ValueError("at least one state key is needed")
        self._sealing = keys[0]
        self._opening = {key.key_id: AESGCM(key.secret) for key in keys}

    def seal(self, payload: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plain = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        sealed = AESGCM(self._sealing.secret).encrypt(nonce, plain, self._aad(self._sealing.key_id))
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_VERSION}.{self._sealing.key_id}.{body}"

    def open(self, state: str) -> dict[str, Any]:
        version, _, rest = state.partition(".")
        key_id, _, body = rest.partition(".")
        if version != _VERSION or not key_id or not body:
            raise StateRejected("not a Parley conversation state")
        cipher = self._opening.get(key_id)
        if cipher is None:
            raise StateRejected("the state was sealed with a key this server does not have")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise StateRejected("the state is not valid base64") from None
        if len(raw) <= _NONCE_BYTES + 16:
            raise StateRejected("the state is truncated")
        try:
            plain = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], self._aad(key_id))
        except InvalidTag:
            raise StateRejected("the state was altered or truncated") from None
        payload = json.loads(plain)
        if not isinstance(payload, dict):
            raise StateRejected("not a Parley conversation state")
        return payload

    @staticmethod
    def _aad(key_id: str) -> bytes:
        return f"parley-state:{_VERSION}:{key_id}".encode()
