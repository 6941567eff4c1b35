"""The LLM activity: one Chat Completions call for a session, reading the transcript by reference.

The workflow passes the session id, how many messages the database already holds, and only the
messages it has not recorded yet; the transcript itself never travels through workflow history.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from cachetools import LRUCache
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from src.activities.heartbeats import heartbeating
from src.activities.recorded_transcripts import (
    EMPTY,
    RecordedTranscript,
    RecordedTranscripts,
    to_wire_messages,
)
from src.activities.session_store import MessagesProduced, write_messages
from src.activities.turn_record import (
    TurnRecord,
    recordable,
    reply_message,
    turn_batch,
    written_reply,
)
from src.activities.turn_stream import TextStreamer, TurnStream, turn_so_far
from src.costs import DEFAULT_PRICES, ModelPrice, llm_cost
from src.db.audit import record_missing_variables
from src.db.queries import transcript
from src.db.snapshots import SnapshotStore
from src.db.tables import ChatSession
from src.domain import (
    CONTEXT_VARIABLE,
    DEFAULT_BUDGET_MESSAGE,
    FINISH_THE_CONVERSATION,
    HANDOFF_PREFIX,
    REQUEST_HUMAN,
    AgentSnapshot,
    BuiltinTool,
    HandoffDestination,
    HandoffTool,
    Message,
    TemplateTooLarge,
    WebhookTool,
    render_template,
    template_variables,
)
from src.llm.providers import ModelProviders
from src.llm.types import (
    ChatMessage as WireMessage,
)
from src.llm.types import (
    LLMReply,
    ToolSchema,
)
from src.observability import record_llm_call
from src.templates import DEFAULT_MAX_RENDERED_CHARS, template_values
from src.temporal.failures import FailureType

_BUILTIN_TOOL_SCHEMAS: dict[str, ToolSchema] = {
    FINISH_THE_CONVERSATION: {
        "type": "function",
        "function": {
            "name": FINISH_THE_CONVERSATION,
            "description": (
                "End the conversation once the user is done or asks to end it. "
                "Say goodbye in the same reply."
            ),
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    },
    REQUEST_HUMAN: {
        "type": "function",
        "function": {
            "name": REQUEST_HUMAN,
            "description": (
                "Ask for a human operator to join the conversation: when the user asks for a "
                "person, or you cannot help. Tell the user in the same reply that someone "
                "has been asked to join."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "description": "Why a human is needed."}
                },
                "required": ["reason"],
                "additionalProperties": False,
            },
        },
    },
}


class UnrecordedOpening(BaseModel):
    """A stateless conversation's first turn: the conversation is recorded only once the turn
    has been answered, so the activity gets what it would otherwise read from its row."""

    account_id: str
    snapshot_id: str
    channel: str


class SessionTurnRequest(BaseModel):
    session_id: str
    recorded_count: int = Field(ge=0)
    unrecorded: list[Message]
    allow_tools: bool = True
    # A stateless turn's own `additional_data` (the client sends it every turn, and the stored
    # one is replaced only once the turn is recorded); None: the session's, fixed at open.
    additional_data: dict[str, Any] | None = None
    # Set on a stateless first turn (nothing in the database yet); missing template variables
    # are then recorded by the workflow with the turn, not here, so a failed turn leaves nothing.
    opening: UnrecordedOpening | None = None
    # USD: once the conversation's LLM cost so far (recorded and unrecorded messages) reaches
    # it, the model is not called and the reply is the agent's budget message.
    budget_usd: float | None = None
    # Where the reply streams to (its text as the model produces it); None: not streamed.
    stream: TurnStream | None = None
    # The session's context strings (oldest first), in the system prompt; and an operator's
    # whispered guidance for this turn, as a system message after the transcript.
    context: list[str] = Field(default_factory=list)
    guidance: list[str] = Field(default_factory=list)
    # A squad's active member (its prompt, model and tools), and the first message of the
    # transcript it reads (the context its handoff chose); None and 0: the session's agent,
    # all of it.
    snapshot_id: str | None = None
    visible_from: int = Field(default=0, ge=0)
    # A session's turn: a plain reply is recorded with the turn's unrecorded messages and
    # what waits to be written with them (src/activities/turn_record.py); None: not recorded.
    record: TurnRecord | None = None


_CACHED_CONTEXTS = 4096


class _SessionContext(BaseModel):
    account_id: str
    snapshot_id: str
    channel: str
    additional_data: dict[str, Any]
    external_id: dict[str, Any] | None = None


class LLMActivities:
    def __init__(
        self,
        models: ModelProviders,
        sessions: async_sessionmaker[AsyncSession],
        snapshots: SnapshotStore,
        *,
        max_rendered_chars: int = DEFAULT_MAX_RENDERED_CHARS,
        prices: dict[str, ModelPrice] = DEFAULT_PRICES,
        transcripts: RecordedTranscripts | None = None,
    ) -> None:
        self._models = models
        self._prices = prices
        self._sessions = sessions
        self._snapshots = snapshots
        self._max_rendered_chars = max_rendered_chars
        # What a session's turns need besides its transcript is frozen at open: cache it.
        self._contexts: LRUCache[str, _SessionContext] = LRUCache(_CACHED_CONTEXTS)
        # Each session's recorded transcript between turns (shared with the recorder of this
        # process): a turn reads only the rows recorded since, if any.
        self._transcripts = transcripts if transcripts is not None else RecordedTranscripts()

    @activity.defn(name="llm.complete_session_turn")
    async def complete_session_turn(self, request: SessionTurnRequest) -> LLMReply:
        # Beating from the start: under load the database reads can wait longer than the
        # heartbeat timeout, and a silent activity would be timed out and run again.
        async with heartbeating():
            return await self._complete_session_turn(request)

    async def _complete_session_turn(self, request: SessionTurnRequest) -> LLMReply:
        if request.record is not None and activity.info().attempt > 1:
            async with self._sessions() as db:
                written = await written_reply(
                    db,
                    request.session_id,
                    request.recorded_count,
                    request.unrecorded,
                    request.record.batch,
                )
            if written is not None:
                return written  # an earlier attempt answered and recorded the turn
        if request.opening is not None:
            context = _SessionContext(
                account_id=request.opening.account_id,
                snapshot_id=request.opening.snapshot_id,
                channel=request.opening.channel,
                additional_data=request.additional_data or {},
            )
            recorded = EMPTY
        else:
            context, recorded = await self._load(request.session_id, request.recorded_count)
        agent = await self._snapshots.load(request.snapshot_id or context.snapshot_id)
        if self._budget_used_up(request, recorded):
            return LLMReply(
                content=agent.spec.budget_message or DEFAULT_BUDGET_MESSAGE,
                model=agent.model.name,
                budget_used_up=True,
            )
        values = template_values(
            agent.spec.variables,
            context.additional_data if request.additional_data is None else request.additional_data,
            context.channel,
            datetime.now(UTC),
            context.external_id,
        )
        values[CONTEXT_VARIABLE] = "\n".join(request.context)
        try:
            system_prompt, missing = render_template(
                with_context_section(agent.spec.system_prompt, request.context),
                values,
                self._max_rendered_chars,
            )
        except TemplateTooLarge as error:
            # Checked at open; a session opened under a higher limit fails its turns clearly.
            raise ApplicationError(
                f"the agent's system_prompt {error}",
                type=FailureType.PROMPT_TOO_LARGE,
                non_retryable=True,
            ) from None
        if request.opening is None:
            await record_missing_variables(
                self._sessions, context.account_id, request.session_id, "system_prompt", missing
            )
        messages: list[WireMessage] = [{"role": "system", "content": system_prompt}]
        messages += recorded.wire_from(request.visible_from)
        messages += to_wire_messages(
            request.unrecorded[max(0, request.visible_from - request.recorded_count) :]
        )
        if request.guidance:
            messages.append({"role": "system", "content": guidance_message(request.guidance)})
        tools = tool_schemas(agent) if request.allow_tools else []
        started = time.monotonic()
        reply = await self._ask(request, agent, messages, tools)
        record_llm_call(
            reply.model or agent.model.name,
            (time.monotonic() - started) * 1000,
            reply.prompt_tokens,
            reply.completion_tokens,
        )
        return reply

    async def _ask(
        self,
        request: SessionTurnRequest,
        agent: AgentSnapshot,
        messages: list[WireMessage],
        tools: list[ToolSchema],
    ) -> LLMReply:
        """The model call, streamed to the conversation's live stream when asked; a plain
        reply of a session's turn is recorded with the turn."""
        if request.stream is None:
            reply = await self._models.complete(agent.model, messages, tools)
            recording = self._recording(request, reply)
            if recording is None:
                return reply
            async with self._sessions.begin() as db:
                await recording.write(db)
            return recording.recorded(reply)
        streamer = TextStreamer(self._sessions, request.session_id, request.stream)
        earlier = turn_so_far(request.recorded_count, request.unrecorded, request.stream)
        streamer.open(activity.info().attempt > 1, earlier)
        try:
            reply = await self._models.complete(agent.model, messages, tools, on_text=streamer.text)
        except BaseException:
            await streamer.fail()
            raise
        recording = self._recording(request, reply)
        await streamer.close(reply, also=recording.write if recording else None)
        return recording.recorded(reply) if recording else reply

    def _recording(self, request: SessionTurnRequest, reply: LLMReply) -> _Recording | None:
        if request.record is None or not recordable(reply):
            return None
        message = reply_message(reply, request.record)
        batch = turn_batch(
            request.session_id, request.recorded_count, request.unrecorded, message, request.record
        )
        return _Recording(batch, message, self._transcripts)

    def _budget_used_up(self, request: SessionTurnRequest, recorded: RecordedTranscript) -> bool:
        """Whether the calls so far cost the budget: those recorded and those of messages not
        recorded yet (earlier steps of this turn, such as tool calls, among them)."""
        if request.budget_usd is None:
            return False
        usages = recorded.usages + [m.usage for m in request.unrecorded if m.usage is not None]
        return llm_cost(usages, self._prices) >= request.budget_usd

    async def _load(
        self, session_id: str, recorded_count: int
    ) -> tuple[_SessionContext, RecordedTranscript]:
        """The session's context and its first `recorded_count` messages, in wire form."""
        cached = self._transcripts.get(session_id)
        known = cached.prefix(recorded_count) if cached is not None else None
        start = known.count if known is not None else 0
        context = self._contexts.get(session_id)
        if context is not None and known is not None and start == recorded_count:
            return context, known  # nothing recorded since this session's last turn
        async with self._sessions() as db:
            if context is None:
                row = await db.get(ChatSession, session_id)
                if row is None:
                    raise ApplicationError(f"session {session_id} is not in the database")
                context = _SessionContext(
                    account_id=row.account_id,
                    snapshot_id=row.snapshot_id,
                    channel=row.channel,
                    additional_data=row.additional_data,
                    external_id=row.external_id,
                )
                self._contexts[session_id] = context
            messages = await transcript(db, session_id, start, recorded_count)
        if start + len(messages) != recorded_count:
            raise ApplicationError(
                f"session {session_id}: expected {recorded_count} recorded messages, "
                f"found {start + len(messages)}"
            )
        recorded = (known or EMPTY).extended(messages)
        self._transcripts.keep(session_id, recorded)
        return context, recorded


class _Recording:
    """A turn's write with its reply (`write`, in the transaction of the stream's last
    events); once committed, `recorded` extends this process's copy of the transcript, or
    drops it when the write replaced a lost workflow task's."""

    def __init__(
        self, batch: MessagesProduced, message: Message, transcripts: RecordedTranscripts
    ) -> None:
        self._batch = batch
        self._message = message
        self._transcripts = transcripts
        self._replaced = False

    async def write(self, db: AsyncSession) -> None:
        self._replaced = await write_messages(db, self._batch)

    def recorded(self, reply: LLMReply) -> LLMReply:
        batch = self._batch
        if self._replaced:
            self._transcripts.forget(batch.session_id)
        else:
            self._transcripts.recorded(batch.session_id, batch.first_seq, batch.messages)
        return reply.model_copy(update={"recorded_message": self._message})


def with_context_section(system_prompt: str, context: list[str]) -> str:
    """The system prompt with the session's context as its last section, unless the prompt
    places `{{context}}` itself."""
    if not context or CONTEXT_VARIABLE in template_variables(system_prompt):
        return system_prompt
    return f"{system_prompt}\n\n## Context\n{{{{{CONTEXT_VARIABLE}}}}}".lstrip()


def guidance_message(guidance: list[str]) -> str:
    lines = "\n".join(f"- {text}" for text in guidance)
    return (
        "Guidance from a human operator for your next reply (the user does not see this; "
        f"do not quote it):\n{lines}"
    )


def tool_schemas(agent: AgentSnapshot) -> list[ToolSchema]:
    """The tools offered to the model, in the agent's order; MCP tools as discovered."""
    schemas: list[ToolSchema] = []
    for tool in agent.spec.tools:
        if isinstance(tool, BuiltinTool):
            schemas.append(_BUILTIN_TOOL_SCHEMAS[tool.name])
        elif isinstance(tool, WebhookTool):
            schemas.append(_function(tool.name, tool.description, tool.parameters))
        elif isinstance(tool, HandoffTool):
            schemas += [_handoff_function(d) for d in tool.destinations]
    schemas += [_function(t.name, t.description, t.input_schema) for t in agent.mcp_tools]
    return schemas


def _handoff_function(destination: HandoffDestination) -> ToolSchema:
    description = destination.description or f"Hand the conversation to {destination.member}."
    return _function(
        HANDOFF_PREFIX + destination.member,
        f"{description} The user's next answer comes from {destination.member}.",
        {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "Why, for the next member."}
            },
            "required": ["reason"],
            "additionalProperties": False,
        },
    )


def _function(name: str, description: str, parameters: dict[str, Any]) -> ToolSchema:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }
