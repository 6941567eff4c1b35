"""The finish pipeline of a conversation: persist the final record, analyse it, report it.

Each step is an activity with its own retry policy, so a crash at any point resumes after the
last completed step. The final record is written by the calling workflow; analysis and the
completion webhook run in it too (`inline`), or in a SessionAnalysisWorkflow child it abandons.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from src.activities.session_store import (
        MessagesProduced,
        SessionFinished,
        SessionStoreActivities,
    )
    from src.domain import FinishReason, SessionAgent, Transfer
    from src.workflows import activity_options
    from src.workflows.session_analysis import (
        SessionAnalysis,
        analyse_and_report,
        start_session_analysis,
    )
    from src.workflows.webhook_events import WebhookRetry


async def run_finish_pipeline(
    *,
    agent: SessionAgent,
    reason: FinishReason,
    note: str | None,
    unrecorded: MessagesProduced,
    finished_time: datetime,
    retry: WebhookRetry,
    inline: bool = True,
    context: list[str] | None = None,
    transfers: list[Transfer] | None = None,
) -> None:
    """With `inline` False, an agent's analysis runs in a child workflow that outlives the
    caller; agents without analysis raise `session.finished` from the caller either way."""
    session_id, account_id = unrecorded.session_id, unrecorded.account_id
    await workflow.execute_activity_method(
        SessionStoreActivities.persist_final,
        SessionFinished(
            session_id=session_id,
            account_id=account_id,
            reason=reason,
            note=note,
            unrecorded=unrecorded,
            finished_time=finished_time,
            context=context,
            transfers=transfers or [],
        ),
        **activity_options.titled(
            activity_options.STORE, f"persist final session ({reason.value})"
        ),
    )
    job = SessionAnalysis(
        session_id=session_id,
        account_id=account_id,
        agent=agent,
        finished_time=finished_time,
        webhook_retry=retry,
    )
    if agent.has_analysis and not inline:
        await start_session_analysis(job)
    else:
        await analyse_and_report(job)
