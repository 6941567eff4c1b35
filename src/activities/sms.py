"""Sending an assistant message as texts through Twilio's Messages API, exactly once per part.

(Being built: the interface below is what the session workflow calls.)
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity


class SmsText(BaseModel):
    """One assistant message of an SMS session to send. No credentials: the activity reads the
    number's from the database, so none reach Temporal history."""

    session_id: str
    account_id: str
    seq: int  # the message's place in the transcript
    body: str
    number: str  # the session's phone number: the texts' From
    recipient: str  # the person: the texts' To


class SmsSent(BaseModel):
    """What became of the message's parts."""

    parts: int
    accepted: int = 0  # taken by Twilio (now or by an earlier attempt)
    failed: int = 0  # refused by Twilio (a 4xx: 21610 opted out, a bad number, ...)
    dropped: int = 0  # never sent: the recipient had opted out


class SmsActivities:
    @activity.defn(name="send_text")
    async def send_text(self, text: SmsText) -> SmsSent:
        raise NotImplementedError("being built on h/smssend")
