"""SessionAnalysisWorkflow: a finished session's analysis, artifact and completion webhook.

The session workflow starts it as a child with ParentClosePolicy.ABANDON once the final record
is written, and closes: post-conversation analysis (up to 30 minutes of model retries) no longer
holds the endpoint, so an SMS number or a ticket can open its next session meanwhile. The
completion webhook is raised last, so it still carries the artifact.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from src.activities.analysis import (
        AnalysisActivities,
        AnalysisRequest,
    )
    from src.activities.session_store import (
        ArtifactReady,
        SessionStoreActivities,
    )
    from src.domain import Artifact, SessionAgent
    from src.temporal.search_attributes import AGENT_ID, SESSION_ID
    from src.workflows import activity_options
    from src.workflows.webhook_events import WebhookRetry, raise_webhook_event


class SessionAnalysis(BaseModel):
    """What happens after the final record: analysis (if the agent has one), then the
    `session.finished` event."""

    session_id: str
    account_id: str
    agent: SessionAgent
    finished_time: datetime
    webhook_retry: WebhookRetry


def session_analysis_workflow_id(session_id: str) -> str:
    """Per session, not per endpoint: the endpoint's next session has its own."""
    return f"analysis-{session_id}"


async def analyse_and_report(job: SessionAnalysis) -> None:
    """Analyse the conversation, write the artifact, then raise `session.finished` (read
    from the database at delivery time, artifact included)."""
    if job.agent.has_analysis:
        try:
            result = await workflow.execute_activity_method(
                AnalysisActivities.analyze_session,
                AnalysisRequest(session_id=job.session_id, snapshot_id=job.agent.snapshot_id),
                **activity_options.titled(activity_options.ANALYSIS, "post-conversation analysis"),
            )
            artifact, usage = result.artifact, result.usage
        except ActivityError as error:
            # The model stayed unreachable for the whole retry window: report, don't hang.
            artifact, usage = Artifact(summary_error=f"analysis failed: {error.message}"), []
        await workflow.execute_activity_method(
            SessionStoreActivities.persist_artifact,
            ArtifactReady(
                session_id=job.session_id,
                account_id=job.account_id,
                artifact=artifact,
                usage=usage,
                time=workflow.now(),
            ),
            **activity_options.titled(activity_options.STORE, "persist analysis"),
        )
    await raise_webhook_event(
        session_id=job.session_id,
        account_id=job.account_id,
        agent=job.agent,
        event_type="session.finished",
        key="session.finished",
        occurred_time=job.finished_time,
        retry=job.webhook_retry,
    )


async def start_session_analysis(job: SessionAnalysis) -> None:
    """Start the analysis child and return without waiting for it."""
    try:
        await workflow.start_child_workflow(
            SessionAnalysisWorkflow.run,
            job,
            id=session_analysis_workflow_id(job.session_id),
            # A session is analysed once: a child that ran already is not run again.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            parent_close_policy=ParentClosePolicy.ABANDON,
            static_summary="post-conversation analysis",
        )
    except WorkflowAlreadyStartedError:
        pass  # started before: analysed once, reported once


@workflow.defn(name="SessionAnalysisWorkflow")
class SessionAnalysisWorkflow:
    @workflow.run
    async def run(self, job: SessionAnalysis) -> None:
        workflow.upsert_search_attributes(
            [SESSION_ID.value_set(job.session_id), AGENT_ID.value_set(job.agent.id)]
        )
        await analyse_and_report(job)
