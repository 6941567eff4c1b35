"""The finish pipeline of a conversation: persist the final record, analyse it, report it.

Each step is an activity with its own retry policy, run inside the calling workflow, so a crash
at any point resumes after the last completed step."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from src.activities.analysis import (
        ANALYSIS_ACTIVITY_OPTIONS,
        AnalysisActivities,
        AnalysisRequest,
    )
    from src.activities.session_store import (
        STORE_ACTIVITY_OPTIONS,
        ArtifactReady,
        MessagesProduced,
        SessionFinished,
        SessionStoreActivities,
    )
    from src.domain import Artifact, FinishReason, SessionAgent
    from src.workflows.webhook_events import WebhookRetry, raise_webhook_event


async def run_finish_pipeline(
    *,
    agent: SessionAgent,
    reason: FinishReason,
    note: str | None,
    unrecorded: MessagesProduced,
    finished_time: datetime,
    retry: WebhookRetry,
) -> None:
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
        ),
        summary=f"persist final session ({reason.value})",
        **STORE_ACTIVITY_OPTIONS,
    )
    if agent.has_analysis:
        try:
            result = await workflow.execute_activity_method(
                AnalysisActivities.analyze_session,
                AnalysisRequest(session_id=session_id, snapshot_id=agent.snapshot_id),
                summary="post-conversation analysis",
                **ANALYSIS_ACTIVITY_OPTIONS,
            )
            artifact, usage = result.artifact, result.usage
        except ActivityError as error:
            # The model stayed unreachable for the whole retry window: report, don't hang.
            artifact, usage = Artifact(summary_error=f"analysis failed: {error.message}"), []
        await workflow.execute_activity_method(
            SessionStoreActivities.persist_artifact,
            ArtifactReady(
                session_id=session_id,
                account_id=account_id,
                artifact=artifact,
                usage=usage,
                time=workflow.now(),
            ),
            summary="persist analysis",
            **STORE_ACTIVITY_OPTIONS,
        )
    await raise_webhook_event(
        session_id=session_id,
        account_id=account_id,
        agent=agent,
        event_type="session.finished",
        key="session.finished",
        occurred_time=finished_time,
        retry=retry,
    )
