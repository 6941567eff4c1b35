"""The texts an SMS session sends: each assistant message with text goes out through the
`send_text` activity, one message at a time and in transcript order, in the background (a
turn's caller never waits for Twilio). The session waits for the outbox to empty before it
hands over to a new run or finishes, so no text is left behind."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from src.activities.sms import SmsActivities, SmsSent, SmsText
    from src.domain import Message
    from src.workflows import activity_options
    from src.workflows.agent_calls import failure_reason

TWILIO_SMS = "twilio_sms"


class SmsOutbox:
    def __init__(
        self, session_id: str, account_id: str, external_id: dict[str, Any] | None
    ) -> None:
        self._session_id = session_id
        self._account_id = account_id
        # The session's endpoint: the person texted `to` (our number) from `from`.
        endpoint = external_id or {}
        self._number = str(endpoint.get("to", ""))
        self._recipient = str(endpoint.get("from", ""))
        self._queued: deque[SmsText] = deque()
        self._sending: asyncio.Task[None] | None = None

    def send(self, seq: int, message: Message) -> None:
        """Queues `message` (at `seq` in the transcript) if it has text for the person."""
        if message.role != "assistant" or not message.content:
            return
        self._queued.append(
            SmsText(
                session_id=self._session_id,
                account_id=self._account_id,
                seq=seq,
                body=message.content,
                number=self._number,
                recipient=self._recipient,
            )
        )
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_until_empty())

    async def sent_all(self) -> None:
        if self._sending is not None:
            await self._sending

    async def _send_until_empty(self) -> None:
        while self._queued:
            text = self._queued.popleft()
            try:
                sent: SmsSent = await workflow.execute_activity_method(
                    SmsActivities.send_text,
                    text,
                    **activity_options.titled(
                        activity_options.SMS_SEND, f"text message {text.seq} to the person"
                    ),
                )
            except ActivityError as error:
                # Retried for an hour (SMS_SEND): the text is given up, the session goes on.
                workflow.logger.warning(
                    "session %s: message %s was not sent: %s",
                    self._session_id,
                    text.seq,
                    failure_reason(error),
                )
                continue
            if sent.failed or sent.dropped:
                workflow.logger.info(
                    "session %s: message %s: %s of %s texts not sent",
                    self._session_id,
                    text.seq,
                    sent.failed + sent.dropped,
                    sent.parts,
                )
