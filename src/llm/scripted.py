"""The offline `scripted` model: a deterministic stand-in for an LLM so the dev stack and
demo work with no network. It is a provider chosen by configuration, never a fallback."""

from __future__ import annotations

import asyncio
import json
import re

from src.domain import FINISH_THE_CONVERSATION, HANDOFF_PREFIX, SCRIPTED_MODEL, ModelConfig
from src.llm.types import (
    TRANSCRIPT_HEADER,
    ChatMessage,
    LLMReply,
    LLMToolCall,
    TextSink,
    ToolSchema,
)

_GOODBYE = re.compile(r"\b(bye|goodbye|that's all|end the (chat|conversation))\b", re.IGNORECASE)
_TIME_QUESTION = re.compile(r"\btime\b", re.IGNORECASE)
_TIMEZONE = re.compile(r"\b([A-Z][A-Za-z_]+/[A-Z][A-Za-z_]+(?:/[A-Z][A-Za-z_]+)?|UTC)\b")
TIME_TOOL = "get_current_time"


class ScriptedProvider:
    """Echoes the user; asks the `get_current_time` tool (e.g. the mcp-server-time MCP server)
    when the user asks for the time; calls `finishTheConversation` when the user says bye;
    in a squad, hands off (`handoff_to_<member>`) when the user names a member."""

    def __init__(self, word_delay_seconds: float = 0.0) -> None:
        self._word_delay = word_delay_seconds

    async def complete(
        self,
        model: ModelConfig,
        messages: list[ChatMessage],
        tools: list[ToolSchema],
        json_output: bool = False,
        on_text: TextSink | None = None,
    ) -> LLMReply:
        reply = self._decide(messages, tools, json_output)
        if on_text is not None and reply.content:
            # Word by word, as a model streams tokens.
            for number, word in enumerate(re.findall(r"\s*\S+\s*", reply.content)):
                if number and self._word_delay:
                    await asyncio.sleep(self._word_delay)
                await on_text(word)
        return reply

    def _decide(
        self, messages: list[ChatMessage], tools: list[ToolSchema], json_output: bool
    ) -> LLMReply:
        if json_output:
            # No model to extract anything: an empty object, which a schema may well refuse.
            return self._reply("{}", messages)
        last = messages[-1] if messages else {"role": "user", "content": ""}
        if str(last.get("content") or "").startswith(TRANSCRIPT_HEADER):
            lines = str(last["content"]).splitlines()[1:]
            users = sum(1 for line in lines if line.startswith("user: "))
            return self._reply(
                f"(scripted summary) A conversation of {len(lines)} lines, {users} from the user.",
                messages,
            )
        if last["role"] == "tool":
            return self._after_tool(messages)
        text = str(last.get("content") or "")
        offered = {tool["function"]["name"] for tool in tools}
        if _GOODBYE.search(text) and FINISH_THE_CONVERSATION in offered:
            return self._call(FINISH_THE_CONVERSATION, {}, messages)
        for name in sorted(offered):
            member = name.removeprefix(HANDOFF_PREFIX)
            if name.startswith(HANDOFF_PREFIX) and re.search(
                rf"\b{re.escape(member)}\b", text, re.IGNORECASE
            ):
                return self._call(name, {"reason": text[:200]}, messages)
        if _TIME_QUESTION.search(text) and TIME_TOOL in offered:
            zone = _TIMEZONE.search(text)
            return self._call(TIME_TOOL, {"timezone": zone.group(1) if zone else "UTC"}, messages)
        turn = sum(1 for message in messages if message["role"] == "user")
        return self._reply(
            f"(scripted model, turn {turn}) You said: {text!r}. Ask me the time, or say "
            "'bye' to finish.",
            messages,
        )

    def _after_tool(self, messages: list[ChatMessage]) -> LLMReply:
        called = next(
            (
                m["tool_calls"][0]["function"]["name"]
                for m in reversed(messages)
                if m.get("tool_calls")
            ),
            "",
        )
        if called == FINISH_THE_CONVERSATION:
            return self._reply("Thanks for chatting. Goodbye!", messages)
        if called.startswith(HANDOFF_PREFIX):
            member = called.removeprefix(HANDOFF_PREFIX)
            return self._reply(f"(scripted model) You are through to {member} now.", messages)
        result = str(messages[-1].get("content") or "")
        try:
            found = json.loads(result)
            if isinstance(found, dict) and "datetime" in found:
                result = f"it is {found['datetime']} in {found.get('timezone', 'UTC')}"
        except json.JSONDecodeError:
            pass
        return self._reply(f"The {called} tool says: {result}", messages)

    @staticmethod
    def _call(name: str, arguments: dict[str, str], messages: list[ChatMessage]) -> LLMReply:
        call = LLMToolCall(
            id=f"call_scripted_{len(messages)}", name=name, arguments=json.dumps(arguments)
        )
        return LLMReply(tool_calls=[call], model=SCRIPTED_MODEL)

    @staticmethod
    def _reply(content: str, messages: list[ChatMessage]) -> LLMReply:
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        return LLMReply(
            content=content,
            model=SCRIPTED_MODEL,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(content.split()),
        )
