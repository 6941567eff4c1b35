"""The offline scripted model hands a conversation to the squad member the user names, so the
squad walkthrough works with no network."""

from __future__ import annotations

import json

from src.domain import ModelConfig
from src.llm.scripted import ScriptedProvider
from src.llm.types import ChatMessage, ToolSchema

MODEL = ModelConfig(provider="scripted", name="scripted")


def handoff_tool(member: str) -> ToolSchema:
    return {
        "type": "function",
        "function": {"name": f"handoff_to_{member}", "description": "", "parameters": {}},
    }


async def test_naming_a_member_hands_off_to_it_and_the_member_says_so() -> None:
    scripted = ScriptedProvider()
    asked: list[ChatMessage] = [{"role": "user", "content": "I need Billing about a refund"}]

    call = await scripted.complete(MODEL, asked, [handoff_tool("billing"), handoff_tool("sales")])
    [handoff] = call.tool_calls
    answered = await scripted.complete(
        MODEL,
        [
            *asked,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": handoff.id,
                        "type": "function",
                        "function": {"name": handoff.name, "arguments": handoff.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": handoff.id, "content": "ok"},
        ],
        [],
    )
    plain = await scripted.complete(
        MODEL, [{"role": "user", "content": "hello"}], [handoff_tool("billing")]
    )

    assert handoff.name == "handoff_to_billing"
    assert json.loads(handoff.arguments) == {"reason": "I need Billing about a refund"}
    assert answered.content == "(scripted model) You are through to billing now."
    assert plain.tool_calls == [] and plain.content is not None
