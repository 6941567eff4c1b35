"""Prompt templates: `{{name}}` rendering, the variables a session's templates see, and what
the audit log records of a session's context (names, never values)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from src.domain import TemplateTooLarge, render_template, template_variables
from src.errors import InvalidInput
from src.templates import (
    check_timezone,
    context_changes,
    context_opened,
    render_for_caller,
    sip_endpoint_of,
    template_values,
    zone_named,
)

# A Sunday, 23:30 UTC: already Monday in Paris (UTC+1 in winter).
SUNDAY_NIGHT = datetime(2026, 1, 4, 23, 30, 15, tzinfo=UTC)


def test_variables_are_filled_with_or_without_spaces_inside_the_braces() -> None:
    rendered, missing = render_template(
        "Hi {{name}}, welcome to {{ company }}.", {"name": "Ada", "company": "Acme"}
    )

    assert rendered == "Hi Ada, welcome to Acme."
    assert missing == []


def test_a_missing_or_null_variable_renders_empty_and_is_reported() -> None:
    rendered, missing = render_template("[{{a}}|{{b}}|{{c}}]", {"a": "x", "b": None})

    assert rendered == "[x||]"
    assert missing == ["b", "c"]


def test_values_that_are_not_text_render_as_python_text() -> None:
    rendered, _ = render_template("{{n}} {{flag}} {{zero}}", {"n": 42, "flag": True, "zero": 0})

    assert rendered == "42 True 0"


@pytest.mark.parametrize("text", ["{{1st}}", "{{a-b}}", "{ {name} }", "{{}}", "{{name}"])
def test_what_is_not_a_variable_is_left_as_written(text: str) -> None:
    rendered, missing = render_template(text, {"name": "Ada", "1st": "no", "a": "no"})

    assert rendered == text
    assert missing == []


def test_template_variables_lists_names_in_order_of_appearance() -> None:
    assert template_variables("{{b}} {{ a }} {{b}} {{x-y}}") == ["b", "a", "b"]


def test_a_rendering_exactly_at_the_limit_is_allowed_and_one_character_more_is_not() -> None:
    assert render_template("ab{{v}}", {"v": "cd"}, max_chars=4) == ("abcd", [])
    with pytest.raises(TemplateTooLarge, match="more than 4 characters"):
        render_template("ab{{v}}!", {"v": "cd"}, max_chars=4)


def test_a_short_template_repeating_a_long_variable_is_refused() -> None:
    template = "{{v}}" * 10_000

    with pytest.raises(TemplateTooLarge):
        render_template(template, {"v": "x" * 1_000}, max_chars=100_000)


def test_a_rendering_too_large_for_a_waiting_caller_is_its_mistake_naming_the_field() -> None:
    with pytest.raises(InvalidInput, match="the agent's first_message renders to more than 3"):
        render_for_caller("first_message", "{{v}}", {"v": "long"}, max_chars=3)


def test_render_for_caller_returns_the_rendering_and_the_missing_names() -> None:
    assert render_for_caller("system_prompt", "{{a}}{{b}}", {"a": "1"}, 10) == ("1", ["b"])


@pytest.mark.parametrize(
    "name",
    [None, "", 7, "Not/AZone", "America", "../../etc/passwd", "Europe/" + "x" * 100, "utc\x00"],
)
def test_anything_that_names_no_time_zone_gives_none_and_never_raises(name: object) -> None:
    assert zone_named(name) is None


def test_an_iana_name_gives_its_zone() -> None:
    zone = zone_named("Europe/Paris")

    assert zone is not None
    assert zone.key == "Europe/Paris"


def test_an_additional_data_timezone_must_name_a_zone_unless_null_or_absent() -> None:
    check_timezone({"timezone": "Asia/Tokyo"})
    check_timezone({"timezone": None})
    check_timezone({})
    with pytest.raises(ValueError, match=r"'Mars/Olympus' is not an IANA time zone name"):
        check_timezone({"timezone": "Mars/Olympus"})


def test_a_very_long_bad_timezone_is_shown_shortened() -> None:
    with pytest.raises(ValueError) as refused:
        check_timezone({"timezone": "x" * 500})

    assert "..." in str(refused.value)
    assert len(str(refused.value)) < 200


def test_the_sip_endpoint_is_read_from_sip_endpoint_then_sip() -> None:
    assert sip_endpoint_of({"sip_endpoint": "sip:a@x", "sip": "sip:b@x"}) == "sip:a@x"
    assert sip_endpoint_of({"sip": "sip:b@x"}) == "sip:b@x"
    assert sip_endpoint_of({"sip_endpoint": "", "sip": "sip:b@x"}) == "sip:b@x"
    assert sip_endpoint_of({"sip_endpoint": 5}) == ""
    assert sip_endpoint_of({"ticket": "T-1"}) == ""
    assert sip_endpoint_of(None) == ""


def test_builtins_are_in_utc_without_a_timezone() -> None:
    values = template_values({}, {}, "web", SUNDAY_NIGHT)

    assert values == {
        "now": "2026-01-04T23:30:15+00:00",
        "date": "2026-01-04",
        "time": "23:30",
        "weekday": "Sunday",
        "timezone": "UTC",
        "channel": "web",
        "sip_endpoint": "",
    }


def test_builtins_are_in_the_sessions_timezone_when_it_names_one() -> None:
    values = template_values({}, {"timezone": "Europe/Paris"}, "web", SUNDAY_NIGHT)

    assert values["now"] == "2026-01-05T00:30:15+01:00"
    assert (values["date"], values["time"], values["weekday"]) == ("2026-01-05", "00:30", "Monday")
    assert values["timezone"] == "Europe/Paris"


def test_a_timezone_naming_no_zone_falls_back_to_utc_but_stays_a_variable() -> None:
    values = template_values({}, {"timezone": "Nowhere/Land"}, "web", SUNDAY_NIGHT)

    assert values["time"] == "23:30"
    # additional_data comes after the builtins, so the caller's own value is what renders
    assert values["timezone"] == "Nowhere/Land"


def test_session_data_overrides_agent_defaults_and_reserved_keys_override_both() -> None:
    agent: dict[str, Any] = {"company": "Acme", "tone": "warm", "channel": "agent-set"}
    session: dict[str, Any] = {"company": "Globex", "date": "any day", "sip_endpoint": "fake"}

    values = template_values(agent, session, "sms", SUNDAY_NIGHT, {"sip": "sip:+1555@x"})

    assert values["company"] == "Globex"
    assert values["tone"] == "warm"
    assert values["date"] == "any day"
    assert values["channel"] == "sms"
    assert values["sip_endpoint"] == "sip:+1555@x"


def test_the_opened_context_records_variable_names_and_never_values() -> None:
    opened = context_opened(
        {"zeta": "secret", "alpha": {"card": "4111"}}, "voice", {"sip_endpoint": "sip:me@x"}
    )

    assert opened == {"variables": ["alpha", "zeta"], "channel": "voice", "sip_endpoint": True}
    assert context_opened({}, "web", None) == {
        "variables": [],
        "channel": "web",
        "sip_endpoint": False,
    }


def test_context_changes_name_what_was_added_removed_and_changed_sorted() -> None:
    before = {"plan": "gold", "city": "Oslo", "name": "Ada", "b": 1}
    after = {"name": "Ada", "city": "Bergen", "zip": "5003", "a": 2, "b": 2}

    assert context_changes(before, after) == {
        "added": ["a", "zip"],
        "removed": ["plan"],
        "changed": ["b", "city"],
    }


def test_the_same_context_is_no_change_whatever_the_key_order_inside_values() -> None:
    before = {"profile": {"a": 1, "b": [1, 2]}, "n": None}
    after = {"n": None, "profile": {"b": [1, 2], "a": 1}}

    assert context_changes(before, after) is None
    assert context_changes({}, {}) is None


@pytest.mark.parametrize(
    ("old", "new"),
    [(1, True), (0, False), ("1", 1), (None, ""), ([1, 2], [2, 1]), ({"a": 1}, {"a": "1"})],
)
def test_values_that_only_look_alike_are_changes(old: object, new: object) -> None:
    assert context_changes({"v": old}, {"v": new}) == {
        "added": [],
        "removed": [],
        "changed": ["v"],
    }
