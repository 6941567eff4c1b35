"""Keyset cursors: what `next_cursor` carries, and that anything a client makes up is a 422."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from src.errors import InvalidInput
from src.pagination import decode_cursor, decode_id_cursor, encode_cursor, encode_id_cursor


def b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_a_cursor_gives_back_the_time_and_id_it_was_made_of(when: datetime) -> None:
    cursor = encode_cursor(when, "chat-7f3a")

    assert decode_cursor(cursor) == (when, "chat-7f3a")


def test_a_cursor_is_url_safe_without_padding() -> None:
    cursor = encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), "id?/+&=" * 5)

    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cursors_order_ties_on_time_by_id() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)

    assert decode_cursor(encode_cursor(when, "a")) < decode_cursor(encode_cursor(when, "b"))


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 at all!",
        "e30",  # {}
        b64(["2026-01-01T00:00:00+00:00"]),
        b64(["2026-01-01T00:00:00+00:00", "id", "extra"]),
        b64(["2026-01-01T00:00:00", "id"]),  # a naive time
        b64(["yesterday", "id"]),
        b64([20260101, "id"]),
        b64("2026-01-01T00:00:00+00:00"),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_cursor_not_made_by_the_server_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidInput, match="malformed cursor: pass next_cursor"):
        decode_cursor(cursor)


@pytest.mark.parametrize("last_id", [0, 1, 41, 2**63 - 1])
def test_an_id_cursor_gives_back_its_id(last_id: int) -> None:
    assert decode_id_cursor(encode_id_cursor(last_id)) == last_id


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        b64([-1]),
        b64([2**63]),  # past the 64-bit id column
        b64([]),
        b64([1, 2]),
        b64(["forty"]),
        b64([None]),
        b64(7),
        encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), "x"),  # a cursor of another list
    ],
)
def test_an_id_cursor_not_made_by_the_server_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidInput, match="malformed cursor"):
        decode_id_cursor(cursor)
