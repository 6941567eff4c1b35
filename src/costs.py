"""Turning token usage into money: the per-model price table and a session's costs."""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from pydantic import BaseModel

from src.domain import SCRIPTED_MODEL, CostItem, Message, Usage


class ModelPrice(BaseModel):
    """USD per million tokens."""

    prompt: float
    completion: float


# Defaults, overridable (and extendable) with PARLEY_MODEL_PRICES.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": ModelPrice(prompt=0.15, completion=0.60),
    "gpt-4o": ModelPrice(prompt=2.50, completion=10.00),
    "gpt-4.1": ModelPrice(prompt=2.00, completion=8.00),
    "gpt-4.1-mini": ModelPrice(prompt=0.40, completion=1.60),
    "gpt-4.1-nano": ModelPrice(prompt=0.10, completion=0.40),
    SCRIPTED_MODEL: ModelPrice(prompt=0.0, completion=0.0),
}


def session_costs(
    messages: list[Message], analysis: list[Usage], prices: dict[str, ModelPrice]
) -> tuple[float, list[CostItem]]:
    """Total USD and one cost line per (component, model)."""
    items = _lines("llm", [m.usage for m in messages if m.usage is not None], prices)
    items += _lines("analysis", analysis, prices)
    return round(sum(item.cost for item in items), 8), items


def llm_cost(usages: list[Usage], prices: dict[str, ModelPrice]) -> float:
    """USD of these LLM calls; a model missing from the price table counts as free."""
    return round(sum(item.cost for item in _lines("llm", usages, prices)), 8)


def _lines(
    kind: Literal["llm", "analysis"], usages: list[Usage], prices: dict[str, ModelPrice]
) -> list[CostItem]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    served: dict[str, str | None] = {}
    for usage in usages:
        totals[usage.model][0] += usage.prompt_tokens
        totals[usage.model][1] += usage.completion_tokens
        served.setdefault(usage.model, usage.served_model)
    items = []
    for model, (prompt, completion) in sorted(totals.items()):
        price = model_price(model, served[model], prices)
        cost = (prompt * price.prompt + completion * price.completion) / 1_000_000 if price else 0.0
        items.append(
            CostItem(
                type=kind,
                model=model,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost=round(cost, 8),
                priced=price is not None,
            )
        )
    return items


def model_price(
    model: str, served_model: str | None, prices: dict[str, ModelPrice]
) -> ModelPrice | None:
    """The price of a call to the configured `model` that the endpoint answered as
    `served_model`: the configured name first, then the served one, each exactly and then by
    the longest price-table entry it extends with a `-suffix` (OpenAI answers `gpt-4o-mini`
    as `gpt-4o-mini-2024-07-18`)."""
    names = [model] if not served_model or served_model == model else [model, served_model]
    for name in names:
        if name in prices:
            return prices[name]
    for name in names:
        prefixes = [known for known in prices if name.startswith(f"{known}-")]
        if prefixes:
            return prices[max(prefixes, key=len)]
    return None
