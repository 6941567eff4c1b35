"""The offline `scripted` model: a deterministic stand-in for an LLM so the dev stack and
demo work with no network. It is a provider chosen by configuration, never a fallback."""

from __future__ import annotations

import re

from src.domain import FINISH_THE_CONVERSATION, ModelConfig
from src.llm.types import ChatMessage, LLMReply, LLMToolCall, ToolSchema

_GOODBYE = re.compile(r"\b(bye|goodbye|that's all|end the (chat|conversation))\b", re.IGNORECASE)


class ScriptedProvider:
    """Echoes the user, and calls `finishTheConversation` when the user says goodbye."""

    async def complete(
        self, model: ModelConfig, messages: list[ChatMessage], tools: list[ToolSchema]
    ) -> LLMReply:
        last = messages[-1] if messages else {"role": "user", "content": ""}
        if last["role"] == "tool":
            return self._reply("Thanks for chatting. Goodbye!", messages)
        text = str(last.get("content") or "")
        offered = {tool["function"]["name"] for tool in tools}
        if _GOODBYE.search(text) and FINISH_THE_CONVERSATION in offered:
            return LLMReply(
                tool_calls=[
                    LLMToolCall(id=f"call_scripted_{len(messages)}", name=FINISH_THE_CONVERSATION)
                ],
                model="scripted",
            )
        turn = sum(1 for message in messages if message["role"] == "user")
        return self._reply(
            f"(scripted model, turn {turn}) You said: {text!r}. Say 'bye' to finish.", messages
        )

    @staticmethod
    def _reply(content: str, messages: list[ChatMessage]) -> LLMReply:
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        return LLMReply(
            content=content,
            model="scripted",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(content.split()),
        )
