"""Tenant secrets at rest: webhook signing secrets and tool / MCP header values, sealed with
AES-256-GCM before an agent version or snapshot reaches the database.

A sealed value is stored as `{"sealed": "v1.<key id>.<base64url(nonce + ciphertext + tag)>"}`
in place of the string, so it cannot be mistaken for a real secret (those are strings), and a
plain string read back is a row written before encryption existed. Keys come from
PARLEY_SECRET_KEYS in the format of the state and payload keys: the first seals, all open.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from src.sealing.state_envelope import StateKey

_VERSION = "v1"
_NONCE_BYTES = 12
SEALED = "sealed"


class SecretUnreadable(Exception):
    """A stored secret this server cannot open (a key missing from PARLEY_SECRET_KEYS, or
    a damaged value). Says which key, never the value."""


class SecretBox:
    def __init__(self, keys: list[StateKey]) -> None:
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._sealing = keys[0]
        self._opening = {key.key_id: AESGCM(key.secret) for key in keys}

    def seal(self, value: str) -> dict[str, str]:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        key_id = self._sealing.key_id
        sealed = AESGCM(self._sealing.secret).encrypt(nonce, value.encode(), _aad(key_id))
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return {SEALED: f"{_VERSION}.{key_id}.{body}"}

    def open(self, stored: Any) -> str:
        if isinstance(stored, str):
            return stored  # written before secrets were sealed
        if not isinstance(stored, dict) or not isinstance(stored.get(SEALED), str):
            raise SecretUnreadable("a stored secret is neither text nor a sealed value")
        version, _, rest = stored[SEALED].partition(".")
        key_id, _, body = rest.partition(".")
        cipher = self._opening.get(key_id)
        if version != _VERSION or cipher is None:
            raise SecretUnreadable(
                f"a stored secret was sealed with key {key_id!r}, which is not in "
                "PARLEY_SECRET_KEYS"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(key_id))
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretUnreadable(f"a stored secret (key {key_id!r}) is damaged") from None
        return plain.decode()

    def key_of(self, stored: Any) -> str | None:
        """The id of the key a stored secret is sealed with; None when it is in clear."""
        if isinstance(stored, dict) and isinstance(stored.get(SEALED), str):
            return stored[SEALED].split(".")[1] if stored[SEALED].count(".") >= 2 else ""
        return None

    def seal_agent(self, spec: dict[str, Any]) -> dict[str, Any]:
        """An AgentSpec's JSON with every secret sealed (already sealed ones stay as they are)."""
        return map_agent_secrets(spec, lambda v: v if self.key_of(v) else self.seal(v))

    def open_agent(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The stored JSON of an AgentSpec with every secret opened, ready to validate."""
        return map_agent_secrets(spec, self.open)

    def reseal_agent(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Every secret sealed with the first key (after a rotation, or of a row in clear)."""
        sealing = self._sealing.key_id
        return map_agent_secrets(
            spec, lambda v: v if self.key_of(v) == sealing else self.seal(self.open(v))
        )


def erase_agent_secrets(spec: dict[str, Any]) -> dict[str, Any]:
    """An agent's JSON with its secrets gone: no completion webhook, empty header values
    (names kept, so the config still says which headers it sent)."""
    erased = map_agent_secrets(spec, lambda _: "")
    erased["webhook"] = None
    return erased


def has_secrets(spec: dict[str, Any]) -> bool:
    found: list[Any] = []

    def collect(value: Any) -> Any:
        found.append(value)
        return value

    map_agent_secrets(spec, collect)
    return any(value != "" for value in found)


def map_agent_secrets(spec: dict[str, Any], change: Callable[[Any], Any]) -> dict[str, Any]:
    """A copy of an AgentSpec's JSON with `change` applied to each secret: the completion
    webhook's secret and previous secrets, webhook tools' and MCP servers' header values."""
    result = dict(spec)
    webhook = spec.get("webhook")
    if isinstance(webhook, dict):
        webhook = dict(webhook)
        if "secret" in webhook:
            webhook["secret"] = change(webhook["secret"])
        webhook["previous_secrets"] = [change(s) for s in webhook.get("previous_secrets") or []]
        result["webhook"] = webhook
    tools = []
    for tool in spec.get("tools") or []:
        tool = dict(tool)
        if tool.get("type") == "webhook" and tool.get("headers"):
            tool["headers"] = {name: change(v) for name, v in tool["headers"].items()}
        elif tool.get("type") == "mcp" and (tool.get("server") or {}).get("headers"):
            server = dict(tool["server"])
            server["headers"] = {name: change(v) for name, v in server["headers"].items()}
            tool["server"] = server
        tools.append(tool)
    if "tools" in spec:
        result["tools"] = tools
    return result


def _aad(key_id: str) -> bytes:
    return f"parley-secret:{_VERSION}:{key_id}".encode()
