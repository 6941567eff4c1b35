"""Opaque keyset cursors: (created_time, id) of the last item on the page."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from src.errors import InvalidInput


def encode_cursor(created_time: datetime, item_id: str) -> str:
    raw = json.dumps([created_time.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, item_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when, str(item_id)
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput("malformed cursor: pass next_cursor from a previous page") from error


def encode_id_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([last_id]).encode()).decode().rstrip("=")


def decode_id_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        [last_id] = json.loads(raw)
        value = int(last_id)
        if not 0 <= value < 2**63:  # the id column is a 64-bit integer
            raise ValueError("out of range")
        return value
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInput("malformed cursor: pass next_cursor from a previous page") from error
