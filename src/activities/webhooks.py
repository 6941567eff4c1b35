"""Delivering signed webhook events (session.opened, message, session.finished).

Each delivery is one activity retried by Temporal over the agent's retry window; every attempt
is recorded in the session's audit log. The payload of `session.finished` is read from the
database when delivered, so transcripts never pass through workflow history for it.

Delivery is at least once, with an `Idempotency-Key` that is the same on every attempt of an
event. Only a 2xx is a delivery (a redirect is not followed, nor taken for one). Once a
receiver has answered 2xx, the activity returns the outcome and the workflow records it in a
step of its own (`record_delivery`), so an audit write that fails is retried alone and the
receiver gets the event once; a worker that dies between the answer and the activity's
completion makes the event go out again.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from src.activities.heartbeats import heartbeating
from src.config import Settings
from src.costs import session_costs
from src.db.queries import audit_row, insert_audit_rows, transcript
from src.db.snapshots import SnapshotStore
from src.db.tables import ChatSession
from src.domain import Artifact, Usage
from src.temporal.failures import FailureType
from src.tools.pinned_http import pinned_client, pinned_to
from src.tools.signing import signature_headers
from src.tools.url_guard import Resolver, UrlRefused, resolve_checked, system_resolver
from src.workflows.activity_options import WEBHOOK_MAXIMUM_RETRY_INTERVAL

EVENT_HEADER = "X-Parley-Event"
_RETRYABLE_STATUSES = {408, 425, 429}
RECEIVER_TIMEOUT_SECONDS = 30


class WebhookDelivery(BaseModel):
    event_id: str
    event_type: str
    account_id: str
    session_id: str
    snapshot_id: str
    occurred_time: datetime
    # Given for small events; None means "read the final session from the database".
    data: dict[str, Any] | None = None
    retry_window_seconds: float
    retry_initial_seconds: float


class DeliveryOutcome(BaseModel):
    """An accepted delivery: the attempt the receiver answered 2xx to."""

    attempt: int
    status_code: int
    duration_ms: int


class DeliveryRecord(BaseModel):
    delivery: WebhookDelivery
    outcome: DeliveryOutcome


class WebhookActivities:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        snapshots: SnapshotStore,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._snapshots = snapshots
        self._resolver = resolver
        # Connects only to the addresses `resolve_checked` vetted; never follows a redirect.
        self._http = pinned_client()

    @activity.defn(name="webhooks.deliver")
    async def deliver(self, delivery: WebhookDelivery) -> DeliveryOutcome:
        """The outcome of an accepted delivery; the workflow records it with
        `record_delivery`, so a failing audit write is retried without posting again."""
        # Heartbeats let another worker take over within seconds when this one dies
        # mid-delivery, instead of after the whole start-to-close timeout.
        async with heartbeating():
            return await self._deliver(delivery)

    @activity.defn(name="webhooks.record_delivery")
    async def record_delivery(self, record: DeliveryRecord) -> None:
        async with heartbeating():
            await self._record_delivery(record.delivery, record.outcome)

    async def _record_delivery(self, delivery: WebhookDelivery, outcome: DeliveryOutcome) -> None:
        await self._record(
            delivery,
            f"attempt:{outcome.attempt}",
            "webhook.attempt",
            {
                "event": delivery.event_type,
                "event_id": delivery.event_id,
                "attempt": outcome.attempt,
                "status_code": outcome.status_code,
                "error": None,
                "retry_after_seconds": None,
                "duration_ms": outcome.duration_ms,
            },
        )
        await self._record(
            delivery, "delivered", "webhook.delivered",
            {"event": delivery.event_type, "event_id": delivery.event_id,
             "attempts": outcome.attempt},
        )  # fmt: skip

    async def _deliver(self, delivery: WebhookDelivery) -> DeliveryOutcome:
        """Post the event once; an accepted delivery's outcome, or an ApplicationError (the
        failed attempt recorded in the audit log)."""
        attempt = activity.info().attempt
        snapshot = await self._snapshots.load(delivery.snapshot_id)
        target = snapshot.spec.webhook
        if target is None:
            raise ApplicationError("the agent has no webhook", type=FailureType.WEBHOOK_REJECTED,
                                   non_retryable=True)  # fmt: skip
        data = delivery.data if delivery.data is not None else await self.final_session(delivery)
        body = _event_body(delivery, data)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": delivery.event_id,
            EVENT_HEADER: delivery.event_type,
            **signature_headers(target.signing_secrets, body, int(time.time())),
        }
        answer = await self._post(target.url, body, headers)
        if answer.problem is None:
            assert answer.status is not None
            return DeliveryOutcome(
                attempt=attempt, status_code=answer.status, duration_ms=answer.duration_ms
            )
        await self._record(
            delivery,
            f"attempt:{attempt}",
            "webhook.attempt",
            {
                "event": delivery.event_type,
                "event_id": delivery.event_id,
                "attempt": attempt,
                "status_code": answer.status,
                "error": answer.problem,
                "retry_after_seconds": answer.retry_after,
                "duration_ms": answer.duration_ms,
            },
        )
        raise _failed_attempt(delivery, attempt, answer)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> _ReceiverAnswer:
        """One POST to the checked, pinned address; never raises for the receiver's sake."""
        started = time.monotonic()
        status: int | None = None
        retry_after: float | None = None
        try:
            checked = await resolve_checked(url, self._settings.tool_url_allowlist, self._resolver)
            # Streamed and closed unread: only the status and headers matter, so a receiver's
            # endless body costs nothing. The timeout bounds the whole exchange.
            with pinned_to(checked):
                async with (
                    asyncio.timeout(RECEIVER_TIMEOUT_SECONDS),
                    self._http.stream("POST", url, content=body, headers=headers,
                                      timeout=RECEIVER_TIMEOUT_SECONDS) as response,
                ):  # fmt: skip
                    status = response.status_code
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
            problem = None if 200 <= status < 300 else f"HTTP {status}"
            if 300 <= status < 400:
                problem = f"HTTP {status}: redirects are not followed"
        except UrlRefused as error:
            status, problem = None, f"refused: {error}"
        except httpx.HTTPError as error:
            status, problem = None, f"{type(error).__name__}"
        except TimeoutError:
            status, problem = None, "Timeout"
        duration_ms = round((time.monotonic() - started) * 1000)
        return _ReceiverAnswer(status, problem, retry_after, duration_ms)

    @activity.defn(name="webhooks.record_failure")
    async def record_failure(self, delivery: WebhookDelivery) -> None:
        async with heartbeating():
            await self._record(
                delivery, "failed", "webhook.failed",
                {"event": delivery.event_type, "event_id": delivery.event_id},
            )  # fmt: skip

    async def final_session(self, delivery: WebhookDelivery) -> dict[str, Any]:
        async with self._sessions() as db:
            row = await db.get(ChatSession, delivery.session_id)
            if row is None:
                raise ApplicationError(f"session {delivery.session_id} is not in the database")
            messages = await transcript(db, row.id)
        analysis = [Usage.model_validate(u) for u in row.analysis_usage or []]
        cost, costs = session_costs(messages, analysis, self._settings.model_prices)
        artifact = Artifact.model_validate(row.artifact) if row.artifact else None
        return {
            "id": row.id,
            "agent_id": row.agent_id,
            "agent_version": row.agent_version,
            "channel": row.channel,
            "external_id": row.external_id,
            "final_reason": row.final_reason,
            "note": row.note,
            "created_time": row.created_time.isoformat(),
            "finished_time": row.finished_time.isoformat() if row.finished_time else None,
            "last_activity": row.last_activity.isoformat(),
            "messages": [m.model_dump(mode="json") for m in messages],
            "artifact": artifact.model_dump(mode="json") if artifact else None,
            "cost": cost,
            "costs": [c.model_dump(mode="json") for c in costs],
        }

    async def _record(
        self, delivery: WebhookDelivery, suffix: str, kind: str, data: dict[str, Any]
    ) -> None:
        event = audit_row(
            delivery.session_id,
            delivery.account_id,
            kind,
            datetime.now(UTC),
            data,
            event_key=f"{delivery.event_id}:{suffix}",
        )
        async with self._sessions.begin() as db:
            await insert_audit_rows(db, [event])

    async def close(self) -> None:
        await self._http.aclose()


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP-date) in seconds from `now` (the
    current time when not given); None when there is none or it is not one of the two."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class _ReceiverAnswer:
    status: int | None  # None: no HTTP answer (refused address, connection error, timeout)
    problem: str | None  # None: accepted
    retry_after: float | None
    duration_ms: int


def _event_body(delivery: WebhookDelivery, data: dict[str, Any] | None) -> bytes:
    return json.dumps(
        {
            "event": delivery.event_type,
            "event_id": delivery.event_id,
            "occurred_time": delivery.occurred_time.isoformat(),
            "session_id": delivery.session_id,
            "data": data,
        },
        separators=(",", ":"),
        sort_keys=True,
        default=str,
    ).encode()


def _failed_attempt(
    delivery: WebhookDelivery, attempt: int, answer: _ReceiverAnswer
) -> ApplicationError:
    """A 4xx (other than 408, 425, 429) or a refused address is not retried; anything else is,
    after the receiver's Retry-After when it asks for longer than the backoff."""
    status, problem = answer.status, answer.problem or ""
    if status is not None and status < 500 and status not in _RETRYABLE_STATUSES:
        return ApplicationError(
            f"the receiver refused the event: {problem}",
            type=FailureType.WEBHOOK_REJECTED,
            non_retryable=True,
        )
    if status is None and problem.startswith("refused"):
        return ApplicationError(problem, type=FailureType.WEBHOOK_REJECTED, non_retryable=True)
    return ApplicationError(
        f"delivery failed: {problem}",
        next_retry_delay=_next_retry_delay(delivery, attempt, answer.retry_after),
    )


def _next_retry_delay(
    delivery: WebhookDelivery, attempt: int, retry_after: float | None
) -> timedelta | None:
    """The receiver's Retry-After when it asks for longer than the backoff would wait (a
    receiver that is shedding load is not hit again after one second), capped like the
    backoff; None leaves the interval to the retry policy."""
    if retry_after is None:
        return None
    backoff = delivery.retry_initial_seconds * 2.0 ** min(attempt - 1, 64)
    longest = WEBHOOK_MAXIMUM_RETRY_INTERVAL.total_seconds()
    return timedelta(seconds=min(max(retry_after, backoff), longest))
