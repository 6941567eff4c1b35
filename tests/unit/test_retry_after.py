"""Retry-After: what a webhook receiver or a model endpoint asks us to wait, and how long a
webhook delivery then waits before its next attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from src.activities.webhooks import (
    WebhookDelivery,
    _next_retry_delay,
    retry_after_seconds,
)
from src.llm.openai_chat import _retry_after_seconds as model_retry_after
from src.workflows.activity_options import WEBHOOK_MAXIMUM_RETRY_INTERVAL as MAXIMUM_RETRY_INTERVAL

NOW = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("007", 7.0), ("86400", 86_400.0)],
)
def test_delta_seconds_are_read_as_seconds(header: str, seconds: float) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_an_http_date_is_the_time_left_until_it() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2026 07:30:30 GMT", NOW) == 150.0


def test_an_http_date_with_an_offset_is_read_in_that_offset() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2026 09:29:00 +0200", NOW) == 60.0


def test_an_http_date_in_the_past_means_now() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", NOW) == 0.0


def test_without_a_time_given_a_date_counts_from_the_clock() -> None:
    assert retry_after_seconds("Thu, 01 Jan 1970 00:00:00 GMT") == 0.0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "soon",
        "-5",
        "1.5",
        "12 seconds",
        "١٢",  # Arabic-Indic digits: str.isdigit says yes, HTTP says no
        "Wed, 21 Oct 2026 07:30:30 -0000",  # "-0000" means an unknown zone: no time at all
        "Wed, 32 Oct 2026 07:30:30 GMT",
    ],
)
def test_anything_else_is_no_retry_after(header: str | None) -> None:
    assert retry_after_seconds(header, NOW) is None


def delivery(initial_seconds: float = 1.0) -> WebhookDelivery:
    return WebhookDelivery(
        event_id="s1:session.finished",
        event_type="session.finished",
        account_id="acct-1",
        session_id="s1",
        snapshot_id="snap-1",
        occurred_time=NOW,
        retry_window_seconds=86_400,
        retry_initial_seconds=initial_seconds,
    )


def test_without_a_retry_after_the_retry_policy_decides_the_wait() -> None:
    assert _next_retry_delay(delivery(), attempt=3, retry_after=None) is None


def test_a_retry_after_longer_than_the_backoff_is_waited() -> None:
    assert _next_retry_delay(delivery(), attempt=1, retry_after=90) == timedelta(seconds=90)


def test_a_retry_after_shorter_than_the_backoff_waits_the_backoff() -> None:
    # attempt 4 with a 1 s initial interval: the policy would wait 1 * 2**3 = 8 s
    assert _next_retry_delay(delivery(), attempt=4, retry_after=0) == timedelta(seconds=8)
    assert _next_retry_delay(delivery(2.5), attempt=2, retry_after=3) == timedelta(seconds=5)


def test_the_wait_is_capped_at_the_longest_retry_interval() -> None:
    assert _next_retry_delay(delivery(), attempt=1, retry_after=10**9) == MAXIMUM_RETRY_INTERVAL
    assert _next_retry_delay(delivery(), attempt=500, retry_after=1) == MAXIMUM_RETRY_INTERVAL


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [({"Retry-After": "2"}, 2.0), ({"retry-after": "0.5"}, 0.5), ({"Retry-After": "-3"}, 0.0)],
)
def test_a_model_endpoints_retry_after_is_read_in_seconds(
    headers: dict[str, str], seconds: float
) -> None:
    assert model_retry_after(httpx.Response(429, headers=headers)) == seconds


@pytest.mark.parametrize("headers", [{}, {"Retry-After": "Wed, 21 Oct 2026 07:30:30 GMT"}])
def test_a_model_endpoint_without_seconds_to_wait_leaves_the_wait_to_temporal(
    headers: dict[str, str],
) -> None:
    assert model_retry_after(httpx.Response(429, headers=headers)) is None
    assert model_retry_after(None) is None
