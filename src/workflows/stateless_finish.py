"""StatelessFinishWorkflow: the finish pipeline of a stateless conversation, after its answer.

The finishing turn records the conversation final (so it reads final at once) and starts this
child with ParentClosePolicy.ABANDON, then answers: analysis and the completion webhook no
longer hold the client's request. The pipeline is the sessions' own; its first step finds the
record already final and changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from src.activities.session_store import MessagesProduced
    from src.domain import FinishReason, SessionAgent, SessionStatus
    from src.temporal import search_attributes
    from src.workflows.finish_pipeline import run_finish_pipeline
    from src.workflows.webhook_events import WebhookRetry


class StatelessFinish(BaseModel):
    call_id: str
    account_id: str
    agent: SessionAgent
    channel: str
    reason: FinishReason
    # How many messages the conversation holds, all recorded by the finishing turn.
    message_count: int
    last_activity: datetime
    finished_time: datetime
    webhook_retry: WebhookRetry


def stateless_finish_workflow_id(call_id: str) -> str:
    """Beside the turns (`text-chat-<call id>-<turn>`), so the conversation's histories are
    found, exported and replayed together."""
    return f"text-chat-{call_id}-finish"


@workflow.defn(name="StatelessFinishWorkflow")
class StatelessFinishWorkflow:
    @workflow.run
    async def run(self, finish: StatelessFinish) -> None:
        workflow.upsert_search_attributes(
            search_attributes.conversation(finish.call_id, finish.agent.id, finish.channel)
            + search_attributes.status(SessionStatus.FINAL.value, finish.reason.value)
        )
        await run_finish_pipeline(
            agent=finish.agent,
            reason=finish.reason,
            note=None,
            unrecorded=MessagesProduced(
                session_id=finish.call_id,
                account_id=finish.account_id,
                first_seq=finish.message_count,
                messages=[],
                last_activity=finish.last_activity,
            ),
            finished_time=finish.finished_time,
            retry=finish.webhook_retry,
        )
