"""One agent turn: ask the model, run the tools it calls, ask again, until a plain reply.

Deterministic: the model and tools are reached only through the `complete` callable, which the
workflow backs with activities. Stateful sessions and (later) stateless turns share this loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from src.domain import FINISH_THE_CONVERSATION, AgentSnapshot, Message, ToolCall
    from src.llm.types import LLMReply

FINISH_ACKNOWLEDGED = "The conversation will end after your reply. Say goodbye now."

# complete(allow_tools) asks the model for the next step of the transcript as it stands.
Complete = Callable[[bool], Awaitable[LLMReply]]
Append = Callable[[Message], None]


@dataclass
class TurnEnd:
    agent_finished: bool


async def run_agent_turn(
    agent: AgentSnapshot, max_tool_steps: int, complete: Complete, append: Append
) -> TurnEnd:
    finish_called = False
    steps = 0
    while True:
        reply = await complete(steps < max_tool_steps and not finish_called)
        if not reply.tool_calls:
            append(_assistant(reply.content, []))
            return TurnEnd(agent_finished=finish_called)
        calls = []
        for call in reply.tool_calls:
            if call.name == FINISH_THE_CONVERSATION and agent.has_builtin(call.name):
                finish_called = True
                response = FINISH_ACKNOWLEDGED
            else:
                response = f"error: the tool {call.name!r} is not available to this agent"
            calls.append(
                ToolCall(id=call.id, name=call.name, arguments=call.arguments, response=response)
            )
        append(_assistant(reply.content, calls))
        steps += 1
        if finish_called and reply.content:
            return TurnEnd(agent_finished=True)


def _assistant(content: str | None, calls: list[ToolCall]) -> Message:
    return Message(role="assistant", content=content, tool_calls=calls, time=workflow.now())
