"""The session's context and an operator's guidance, as the model is given them."""

from __future__ import annotations

from src.activities.llm import guidance_message, with_context_section
from src.domain import render_template


def test_context_is_the_last_section_of_the_system_prompt() -> None:
    prompt = with_context_section("You help customers.", ["order 1234", "VIP"])
    rendered, missing = render_template(prompt, {"context": "order 1234\nVIP"})

    assert rendered == "You help customers.\n\n## Context\norder 1234\nVIP"
    assert missing == []


def test_a_prompt_placing_the_context_itself_gets_no_extra_section() -> None:
    prompt = "Known facts: {{context}}. Be brief."
    assert with_context_section(prompt, ["a"]) == prompt


def test_no_context_leaves_the_prompt_as_it_is() -> None:
    assert with_context_section("You help.", []) == "You help."


def test_guidance_lists_each_whisper_and_says_the_user_does_not_see_it() -> None:
    text = guidance_message(["offer a refund", "be formal"])
    assert text.endswith("- offer a refund\n- be formal")
    assert "the user does not see this" in text
