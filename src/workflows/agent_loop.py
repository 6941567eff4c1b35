"""One agent turn: ask the model, run the tools it calls, ask again, until a plain reply.

Deterministic: the model and tools are reached only through the `complete` callable, which the
workflow backs with activities. Stateful sessions and (later) stateless turns share this loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from src.domain import (
        FINISH_THE_CONVERSATION,
        REQUEST_HUMAN,
        Author,
        FinishReason,
        Message,
        SessionAgent,
        ToolCall,
        Usage,
    )
    from src.llm.types import LLMReply, LLMToolCall

FINISH_ACKNOWLEDGED = "The conversation will end after your reply. Say goodbye now."

# current_agent() is the agent answering (a squad hands over between steps of a turn);
# complete(allow_tools) asks the model for the next step of the transcript as it stands.
Complete = Callable[[bool], Awaitable[LLMReply]]
# run_tool(call) runs one of the agent's tools (an activity, or requestHuman, which the
# conversation answers itself) and returns its result text.
RunTool = Callable[[LLMToolCall], Awaitable[str]]
Append = Callable[[Message], None]


@dataclass
class TurnEnd:
    agent_finished: bool
    # The session's budget was used up: the turn ends with the budget message, unanswered.
    budget_used_up: bool = False

    @property
    def finish_reason(self) -> FinishReason | None:
        """Why the conversation finishes with this turn, if it does."""
        if self.budget_used_up:
            return FinishReason.BUDGET
        return FinishReason.AGENT_FINISH if self.agent_finished else None


async def run_agent_turn(
    current_agent: Callable[[], SessionAgent],
    max_tool_steps: int,
    complete: Complete,
    run_tool: RunTool,
    append: Append,
) -> TurnEnd:
    finish_called = False
    steps = 0
    while True:
        allow_tools = steps < max_tool_steps and not finish_called
        reply = await complete(allow_tools)
        agent = current_agent()  # the one that answered (a squad's member may have changed)
        if reply.budget_used_up:
            append(
                Message(
                    role="assistant",
                    content=reply.content,
                    time=workflow.now(),
                    author=Author.ai(agent.id),
                )
            )
            return TurnEnd(agent_finished=finish_called, budget_used_up=True)
        if not allow_tools and reply.tool_calls:
            # Tools were not offered; a provider that returns calls anyway is not followed.
            reply = reply.model_copy(update={"tool_calls": []})
        if not reply.tool_calls:
            # The model call may have recorded it with the turn already (turn_record.py).
            append(reply.recorded_message or _assistant(agent, reply, []))
            return TurnEnd(agent_finished=finish_called)
        finish_called = finish_called or any(
            call.name == FINISH_THE_CONVERSATION and agent.has_builtin(call.name)
            for call in reply.tool_calls
        )
        # The calls of one step run concurrently; results keep the order the model gave.
        responses = await asyncio.gather(
            *(_respond(agent, call, run_tool) for call in reply.tool_calls)
        )
        calls = [
            ToolCall(id=call.id, name=call.name, arguments=call.arguments, response=response)
            for call, response in zip(reply.tool_calls, responses, strict=True)
        ]
        append(_assistant(agent, reply, calls))
        steps += 1
        if finish_called and reply.content:
            return TurnEnd(agent_finished=True)


async def _respond(agent: SessionAgent, call: LLMToolCall, run_tool: RunTool) -> str:
    kind = agent.tools.get(call.name)
    if kind == "builtin" and call.name == FINISH_THE_CONVERSATION:
        return FINISH_ACKNOWLEDGED
    if kind in ("webhook", "mcp", "handoff") or (kind == "builtin" and call.name == REQUEST_HUMAN):
        return await run_tool(call)
    return f"error: the tool {call.name!r} is not available to this agent"


def _assistant(agent: SessionAgent, reply: LLMReply, calls: list[ToolCall]) -> Message:
    usage = Usage(
        model=reply.model,
        served_model=reply.served_model,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
    )
    return Message(
        role="assistant",
        content=reply.content,
        tool_calls=calls,
        time=workflow.now(),
        usage=usage,
        author=Author.ai(agent.id),
    )
