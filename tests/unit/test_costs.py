"""Prices: which table entry a model call is billed at, and a session's cost lines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from src.costs import DEFAULT_PRICES, ModelPrice, llm_cost, model_price, session_costs
from src.domain import CostItem, Message, Usage

PRICES = {
    "gpt-4o": ModelPrice(prompt=2.50, completion=10.00),
    "gpt-4o-mini": ModelPrice(prompt=0.15, completion=0.60),
    "house": ModelPrice(prompt=1.00, completion=2.00),
}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def reply(usage: Usage | None) -> Message:
    return Message(role="assistant", content="ok", time=T0, usage=usage)


@pytest.mark.parametrize(
    ("model", "served", "priced_as"),
    [
        ("gpt-4o", None, "gpt-4o"),
        ("gpt-4o-mini", None, "gpt-4o-mini"),
        # OpenAI answers with a dated name: the longest entry it extends wins
        ("gpt-4o-mini-2024-07-18", None, "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", None, "gpt-4o"),
        # an alias configured, the dated model served
        ("my-alias", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        # the configured name wins over the served one
        ("house", "gpt-4o", "house"),
        ("house-v2", "house-v2-0611", "house"),
        ("gpt-4o", "gpt-4o", "gpt-4o"),
    ],
)
def test_a_call_is_priced_by_the_configured_name_then_the_served_one(
    model: str, served: str | None, priced_as: str
) -> None:
    assert model_price(model, served, PRICES) == PRICES[priced_as]


@pytest.mark.parametrize(
    ("model", "served"),
    [("llama-3", None), ("gpt-4omni", None), ("gpt", None), ("x", "y-gpt-4o"), ("", "")],
)
def test_a_model_matching_no_entry_has_no_price(model: str, served: str | None) -> None:
    assert model_price(model, served, PRICES) is None


def test_an_exact_served_name_beats_a_prefix_of_the_configured_one() -> None:
    # "house-gpt-4o" extends "house", but the exact names are tried first, both of them
    assert model_price("house-gpt-4o", "gpt-4o", PRICES) == PRICES["gpt-4o"]


def test_the_scripted_model_is_free_by_default() -> None:
    assert DEFAULT_PRICES["scripted"] == ModelPrice(prompt=0.0, completion=0.0)


def test_session_costs_have_one_line_per_component_and_model_with_tokens_summed() -> None:
    messages = [
        Message(role="user", content="hi", time=T0),
        reply(Usage(model="gpt-4o", prompt_tokens=1_000, completion_tokens=100)),
        reply(Usage(model="gpt-4o-mini", prompt_tokens=2_000_000, completion_tokens=0)),
        reply(Usage(model="gpt-4o", prompt_tokens=3_000, completion_tokens=900)),
        reply(None),
    ]
    analysis = [Usage(model="gpt-4o-mini", prompt_tokens=10_000, completion_tokens=1_000)]

    total, items = session_costs(messages, analysis, PRICES)

    assert items == [
        CostItem(
            type="llm", model="gpt-4o", prompt_tokens=4_000, completion_tokens=1_000, cost=0.02,
            priced=True,
        ),
        CostItem(
            type="llm", model="gpt-4o-mini", prompt_tokens=2_000_000, completion_tokens=0,
            cost=0.3, priced=True,
        ),
        CostItem(
            type="analysis", model="gpt-4o-mini", prompt_tokens=10_000, completion_tokens=1_000,
            cost=0.0021, priced=True,
        ),
    ]  # fmt: skip
    assert total == 0.3221


def test_a_model_missing_from_the_price_table_costs_nothing_and_says_so() -> None:
    usage = Usage(model="llama-3", prompt_tokens=5_000, completion_tokens=5_000)

    total, items = session_costs([reply(usage)], [], PRICES)

    assert total == 0.0
    assert [(item.model, item.cost, item.priced) for item in items] == [("llama-3", 0.0, False)]


def test_a_line_is_priced_by_the_served_name_of_its_first_call() -> None:
    first = Usage(model="alias", served_model="gpt-4o", prompt_tokens=1_000_000)
    second = Usage(model="alias", served_model="gpt-4o-mini", prompt_tokens=1_000_000)

    _, items = session_costs([reply(first), reply(second)], [], PRICES)

    assert [(item.prompt_tokens, item.cost) for item in items] == [(2_000_000, 5.0)]


def test_costs_are_rounded_to_eight_decimals() -> None:
    one_token = Usage(model="gpt-4o-mini", prompt_tokens=1, completion_tokens=1)

    total, items = session_costs([reply(one_token)] * 3, [], PRICES)

    # 3 * (0.15 + 0.60) / 1e6 = 0.00000225
    assert items[0].cost == 0.00000225
    assert total == 0.00000225


def test_a_session_with_no_model_calls_costs_nothing() -> None:
    assert session_costs([Message(role="user", content="hi", time=T0)], [], PRICES) == (0.0, [])


def test_llm_cost_adds_up_every_call_across_models() -> None:
    usages = [
        Usage(model="gpt-4o", prompt_tokens=1_000_000, completion_tokens=0),
        Usage(model="house", prompt_tokens=0, completion_tokens=500_000),
        Usage(model="unknown", prompt_tokens=9_000_000, completion_tokens=9_000_000),
    ]

    assert llm_cost(usages, PRICES) == 3.5
    assert llm_cost([], PRICES) == 0.0
