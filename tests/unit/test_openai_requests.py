"""A Chat Completions request as Parley reads it: the transcript it makes of the messages, and
the parameters it refuses by name."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from src.compat.openai_answers import assistant_text, usage_of
from src.compat.openai_requests import ChatCompletionRequest, last_user_text, transcript_of
from src.domain import Message, ToolCall, Usage
from src.errors import InvalidInput

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def refusal(run: Any) -> dict[str, Any]:
    with pytest.raises(InvalidInput) as raised:
        run()
    details: dict[str, Any] = raised.value.details
    return details


def test_tool_results_fold_into_the_calls_they_answer() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]},
        {"role": "assistant", "content": "it is 42", "annotations": []},
        {"role": "user", "content": "thanks"},
    ]

    transcript = transcript_of(messages, NOW)

    assert [m.role for m in transcript] == ["system", "user", "assistant", "assistant", "user"]
    assert transcript[2].tool_calls == [ToolCall(id="c1", name="f", arguments="{}", response="42")]


def test_a_tool_call_nobody_answered_is_refused() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "tool_calls": [call]},
        {"role": "user", "content": "q"},
    ]

    assert refusal(lambda: transcript_of(messages, NOW)) == {"param": "messages[1]"}


def test_the_session_gets_only_the_last_user_message() -> None:
    messages = [{"role": "user", "content": "old"}, {"role": "user", "content": "new"}]

    assert last_user_text(messages) == "new"


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"n": 3}, "n"), ({"logprobs": True}, "logprobs"), ({"whatever": 1}, "whatever")],
)
def test_parameters_parley_would_ignore_are_refused_by_name(
    extra: dict[str, Any], param: str
) -> None:
    request = ChatCompletionRequest.model_validate({"model": "a", "messages": [{}], **extra})

    assert refusal(request.check_supported) == {"param": param, "code": "unsupported_parameter"}


def test_null_and_neutral_values_pass() -> None:
    body = {"model": "a", "messages": [{}], "n": 1, "seed": None, "store": True, "top_p": 1.0}

    ChatCompletionRequest.model_validate(body).check_supported()


def test_the_answer_is_the_turns_assistant_text_and_usage_of_every_call() -> None:
    usage = Usage(model="m", prompt_tokens=10, completion_tokens=5)
    messages = [
        Message(role="assistant", content="Let me look.", time=NOW, usage=usage),
        Message(role="assistant", content=None, time=NOW, usage=usage),
        Message(role="assistant", content="Found it.", time=NOW, usage=usage),
    ]

    assert assistant_text(messages) == "Let me look.\n\nFound it."
    assert usage_of(messages).total_tokens == 45
