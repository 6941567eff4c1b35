"""Raising a webhook event from a workflow: a child WebhookDeliveryWorkflow that outlives its
parent (ParentClosePolicy.ABANDON), started only for the events the agent subscribed to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from src.activities.webhooks import WebhookDelivery
    from src.domain import Message, SessionAgent
    from src.workflows.webhook_delivery import WebhookDeliveryWorkflow


class WebhookRetry(BaseModel):
    window_seconds: float = 86_400
    initial_seconds: float = 1.0


async def raise_webhook_event(
    *,
    session_id: str,
    account_id: str,
    agent: SessionAgent,
    event_type: str,
    key: str,
    occurred_time: datetime,
    retry: WebhookRetry,
    data: dict[str, Any] | None = None,
) -> None:
    """`key` identifies the event within the session; `data` None means the final session,
    read from the database at delivery time."""
    if event_type not in agent.webhook_events:
        return
    delivery = WebhookDelivery(
        event_id=f"{session_id}:{key}",
        event_type=event_type,
        account_id=account_id,
        session_id=session_id,
        snapshot_id=agent.snapshot_id,
        occurred_time=occurred_time,
        data=data,
        retry_window_seconds=retry.window_seconds,
        retry_initial_seconds=retry.initial_seconds,
    )
    try:
        await workflow.start_child_workflow(
            WebhookDeliveryWorkflow.run,
            delivery,
            id=f"webhook-{delivery.event_id}",
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary=f"webhook {event_type}",
        )
    except WorkflowAlreadyStartedError:
        pass  # raised before (e.g. by the previous run): delivered once, not twice


class SessionEvents:
    """The webhook events one session raises, under keys unique within it."""

    def __init__(self, session_id: str, account_id: str, retry: WebhookRetry) -> None:
        self._session_id = session_id
        self._account_id = account_id
        self.retry = retry

    async def raise_event(
        self, agent: SessionAgent, event_type: str, key: str, data: dict[str, Any]
    ) -> None:
        await raise_webhook_event(
            session_id=self._session_id,
            account_id=self._account_id,
            agent=agent,
            event_type=event_type,
            key=key,
            occurred_time=workflow.now(),
            retry=self.retry,
            data=data,
        )

    async def raise_message(self, agent: SessionAgent, seq: int, message: Message) -> None:
        data = {"seq": seq, **message.model_dump(mode="json")}
        await self.raise_event(agent, "message", f"message:{seq}", data)
