"""Post-conversation analysis: a summary and structured outputs from the agent's model.

Structured outputs are asked for in JSON mode and validated against their JSON schema; an
invalid answer is sent back to the model with the validation error, a bounded number of
times, then recorded as failed with the reason.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from src.activities.heartbeats import heartbeating
from src.db.queries import transcript
from src.db.snapshots import SnapshotStore
from src.domain import (
    AgentSnapshot,
    Artifact,
    Message,
    StructuredOutput,
    StructuredOutputResult,
    Usage,
)
from src.llm.providers import ModelProviders
from src.llm.types import TRANSCRIPT_HEADER, LLMReply
from src.llm.types import ChatMessage as WireMessage
from src.temporal.failures import FailureType
from src.tools.json_schemas import SchemaRefused, validation_errors


class AnalysisRequest(BaseModel):
    session_id: str
    snapshot_id: str


class AnalysisResult(BaseModel):
    artifact: Artifact
    usage: list[Usage] = Field(default_factory=list)


class AnalysisActivities:
    def __init__(
        self,
        models: ModelProviders,
        sessions: async_sessionmaker[AsyncSession],
        snapshots: SnapshotStore,
        attempts: int,
    ) -> None:
        self._models = models
        self._sessions = sessions
        self._snapshots = snapshots
        self._attempts = attempts

    @activity.defn(name="analysis.analyze_session")
    async def analyze_session(self, request: AnalysisRequest) -> AnalysisResult:
        agent = await self._snapshots.load(request.snapshot_id)
        settings = agent.spec.analysis
        result = AnalysisResult(artifact=Artifact())
        if settings is None:
            return result
        async with self._sessions() as db:
            conversation = transcript_text(await transcript(db, request.session_id))
        if settings.summary_prompt:
            try:
                reply = await self._ask(agent, result, settings.summary_prompt, conversation, [])
                result.artifact.summary = (reply.content or "").strip()
            except ApplicationError as error:
                if error.type != FailureType.LLM_REJECTED:
                    raise
                result.artifact.summary_error = error.message
        for output in settings.structured_outputs:
            result.artifact.structured_outputs[output.name] = await self._extract(
                agent, result, output, conversation
            )
        return result

    async def _extract(
        self,
        agent: AgentSnapshot,
        result: AnalysisResult,
        output: StructuredOutput,
        transcript: str,
    ) -> StructuredOutputResult:
        instruction = (
            f"Extract `{output.name}` from the conversation. Answer with one JSON value only, "
            f"valid against this JSON schema:\n{json.dumps(output.schema_)}"
        )
        follow_up: list[WireMessage] = []
        error = "no answer"
        for attempt in range(1, self._attempts + 1):
            try:
                reply = await self._ask(agent, result, instruction, transcript, follow_up, True)
            except ApplicationError as refused:
                if refused.type != FailureType.LLM_REJECTED:
                    raise
                return StructuredOutputResult(
                    status="failed", error=refused.message, attempts=attempt
                )
            answer = reply.content or ""
            try:
                value = json.loads(answer)
                problems = validation_errors(output.schema_, value)
            except json.JSONDecodeError as invalid:
                value, problems, error = None, [], f"not JSON: {invalid.msg}"
            except SchemaRefused as unusable:
                error = f"the schema cannot be used: {unusable}"
                return StructuredOutputResult(status="failed", error=error, attempts=attempt)
            else:
                if not problems:
                    return StructuredOutputResult(status="ok", value=value, attempts=attempt)
                where = "/".join(str(p) for p in problems[0].path) or "(root)"
                error = f"does not match the schema at {where}: {problems[0].message}"
            follow_up = [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": f"That answer {error}. Answer again, JSON only."},
            ]
        return StructuredOutputResult(
            status="failed", error=f"{self._attempts} invalid answers; last {error}",
            attempts=self._attempts,
        )  # fmt: skip

    async def _ask(
        self,
        agent: AgentSnapshot,
        result: AnalysisResult,
        instruction: str,
        transcript: str,
        follow_up: list[WireMessage],
        json_output: bool = False,
    ) -> LLMReply:
        messages: list[WireMessage] = [
            {"role": "system", "content": instruction},
            {"role": "user", "content": transcript},
            *follow_up,
        ]
        async with heartbeating():
            reply = await self._models.complete(agent.model, messages, [], json_output=json_output)
        result.usage.append(
            Usage(
                model=reply.model or agent.model.name,
                served_model=reply.served_model,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
            )
        )
        return reply


def transcript_text(messages: list[Message]) -> str:
    lines = [TRANSCRIPT_HEADER]
    for message in messages:
        if message.content:
            lines.append(f"{message.role}: {message.content}")
        for call in message.tool_calls:
            lines.append(f"tool {call.name}({call.arguments}) -> {call.response}")
    return "\n".join(lines)
