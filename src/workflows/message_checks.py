"""What a session refuses of a user message, for updates (the caller gets an error) and
signals (nobody to answer: the refusal is audited as `message.refused`)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from src.activities.session_store import AuditEntry
    from src.temporal.failures import FailureType


def check_content(content: str, max_chars: int) -> None:
    if not content.strip():
        raise ApplicationError("the message is empty", type=FailureType.INVALID_MESSAGE)
    if len(content) > max_chars:
        raise ApplicationError(
            f"the message has {len(content)} characters; the limit is {max_chars}",
            type=FailureType.MESSAGE_TOO_LARGE,
        )


def channel_refusal(
    content: str,
    for_session: str | None,
    session_id: str,
    closing: bool,
    max_chars: int,
    has_attachments: bool = False,
) -> str | None:
    """Why a channel message is refused, in the words of the update's errors; None takes it.
    A message may be only attachments (a photo texted with no words)."""
    if for_session is not None and for_session != session_id:
        return "another_session"
    if closing:
        return "session_final"
    if not content.strip() and not has_attachments:
        return "empty"
    if len(content) > max_chars:
        return "too_large"
    return None


def refusal_entry(chars: int, idempotency_key: str | None, reason: str) -> AuditEntry:
    """The `message.refused` audit event: why and how long, never the content (it may be
    what was wrong)."""
    return AuditEntry(
        key=f"message.refused:{workflow.uuid4()}",
        kind="message.refused",
        data={"reason": reason, "chars": chars, "idempotency_key": idempotency_key},
        time=workflow.now(),
    )
