"""Session identity: which workflow ID a session lives under."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any


def endpoint_hash(account_id: str, channel: str, external_id: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the endpoint. The account is part of it so that two
    accounts using the same external id never share a session."""
    canonical = json.dumps(
        {"account_id": account_id, "channel": channel, "external_id": external_id},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def session_workflow_id(endpoint: str | None) -> str:
    """`chat-<uuid>` for a one-off session; `chat-ep-<hash>` for an external endpoint, so that
    concurrent opens for one endpoint collide on the workflow ID and Temporal dedupes them."""
    return f"chat-ep-{endpoint}" if endpoint else f"chat-{uuid.uuid4()}"


def message_update_id(session_id: str, idempotency_key: str) -> str:
    return _keyed_update_id("message", session_id, idempotency_key)


def operator_message_update_id(session_id: str, idempotency_key: str) -> str:
    return _keyed_update_id("operator-message", session_id, idempotency_key)


def _keyed_update_id(kind: str, session_id: str, idempotency_key: str) -> str:
    """An update ID per (session, key): Temporal runs an update once per ID in a run, and a
    retry with the same ID gets the first one's outcome."""
    digest = hashlib.sha256(f"{session_id}\n{idempotency_key}".encode()).hexdigest()
    return f"{kind}-{digest[:40]}"
