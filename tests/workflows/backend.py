"""What ChatSessionWorkflow's activities reach, kept in memory: the session store (transcript
by sequence number, idempotency keys, the final record) and a model that echoes the last user
message. Registered under the real activity names, so the workflow runs unchanged."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity

from src.activities.llm import SessionTurnRequest
from src.activities.session_store import (
    AnsweredTurn,
    KeyLookup,
    MessagesProduced,
    SessionFinished,
    SessionOpened,
)
from src.activities.webhook_tools import ToolInvocation, ToolResult
from src.domain import REQUEST_HUMAN, Message
from src.llm.types import LLMReply, LLMToolCall


@dataclass
class StubBackend:
    opened: list[SessionOpened] = field(default_factory=list)
    # The session's transcript as recorded, by seq.
    transcript: dict[int, Message] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    finished: list[SessionFinished] = field(default_factory=list)
    tool_calls: list[ToolInvocation] = field(default_factory=list)
    # Audit events written, in order (kind, data).
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    model_calls: list[SessionTurnRequest] = field(default_factory=list)
    # Cleared, model calls wait until it is set again: messages queue up meanwhile.
    model_open: asyncio.Event = field(default_factory=asyncio.Event)
    model_called: asyncio.Condition = field(default_factory=asyncio.Condition)
    model_calls_at_once: int = 0
    most_model_calls_at_once: int = 0

    def __post_init__(self) -> None:
        self.model_open.set()

    def activities(self) -> list[Any]:
        return [
            self.record_opened,
            self.record_messages,
            self.find_answered,
            self.persist_final,
            self.complete_session_turn,
            self.call_webhook_tool,
        ]

    def contents(self) -> list[str | None]:
        """The recorded transcript in order; raises if a sequence number is missing."""
        return [self.transcript[seq].content for seq in range(len(self.transcript))]

    async def wait_for_model_calls(self, count: int) -> None:
        async with self.model_called:
            await self.model_called.wait_for(lambda: len(self.model_calls) >= count)

    @activity.defn(name="session_store.record_opened")
    async def record_opened(self, opened: SessionOpened) -> None:
        self.opened.append(opened)

    @activity.defn(name="session_store.record_messages")
    async def record_messages(self, produced: MessagesProduced) -> None:
        self._write(produced)

    @activity.defn(name="session_store.find_answered")
    async def find_answered(self, lookup: KeyLookup) -> AnsweredTurn | None:
        user_seq = self.keys.get(lookup.idempotency_key)
        if user_seq is None:
            return None
        later_users = [
            seq
            for seq, message in self.transcript.items()
            if seq > user_seq and message.role == "user"
        ]
        end = min(later_users, default=max(self.transcript) + 1)
        return AnsweredTurn(first_seq=user_seq + 1, count=end - user_seq - 1)

    @activity.defn(name="session_store.persist_final")
    async def persist_final(self, finished: SessionFinished) -> None:
        self._write(finished.unrecorded)
        self.finished.append(finished)

    @activity.defn(name="llm.complete_session_turn")
    async def complete_session_turn(self, request: SessionTurnRequest) -> LLMReply:
        """Echoes the last user message and says how long the conversation it saw was: the
        recorded messages (read by reference, like the real activity) plus the unrecorded."""
        async with self.model_called:
            self.model_calls.append(request)
            self.model_called.notify_all()
        self.model_calls_at_once += 1
        self.most_model_calls_at_once = max(self.most_model_calls_at_once, self.model_calls_at_once)
        try:
            await self.model_open.wait()
            seen = [self.transcript[seq] for seq in range(request.recorded_count)]
            seen += request.unrecorded
            last_user = next(m for m in reversed(seen) if m.role == "user")
            if (last_user.content or "").startswith("refund") and seen[-1].role == "user":
                return LLMReply(
                    tool_calls=[LLMToolCall(id=f"call-{len(seen)}", name="refund")],
                    model="stub-model",
                )
            if seen[-1].tool_calls:
                return LLMReply(content=f"tool said: {seen[-1].tool_calls[0].response}")
            if (last_user.content or "").startswith("help") and seen[-1].role == "user":
                # The agent asks for a human (requestHuman, which the workflow answers).
                return LLMReply(
                    tool_calls=[
                        LLMToolCall(id=f"call-{len(seen)}", name=REQUEST_HUMAN, arguments="{}")
                    ],
                    model="stub-model",
                )
            return LLMReply(
                content=f"echo: {last_user.content} (saw {len(seen)})",
                model="stub-model",
                prompt_tokens=len(seen),
                completion_tokens=1,
            )
        finally:
            self.model_calls_at_once -= 1

    @activity.defn(name="webhook_tools.call")
    async def call_webhook_tool(self, invocation: ToolInvocation) -> ToolResult:
        self.tool_calls.append(invocation)
        return ToolResult(response=f"{invocation.name} done")

    def _write(self, produced: MessagesProduced) -> None:
        for offset, message in enumerate(produced.messages):
            self.transcript[produced.first_seq + offset] = message
        for seq, key in produced.idempotency_keys.items():
            self.keys[key] = seq
        self.events += [(entry.kind, entry.data) for entry in produced.events]
