"""Anthropic's published standard prices in US dollars per million tokens, as defaults the
operator can override (ANTHROPIC_PRICES); a batch costs ANTHROPIC_BATCH_DISCOUNT (50%) off them.
Lookups go by the longest matching model prefix, as for OpenAI (openai/tables.py)."""

from __future__ import annotations

from app.core.runs.openai.tables import Cost, longest_prefix
from app.ground.config import Price, Settings

PRICES: dict[str, Price] = {
    "claude-opus-4-5": Price(input=5.00, cached_input=0.50, output=25.00),
    "claude-opus-4": Price(input=15.00, cached_input=1.50, output=75.00),
    "claude-sonnet-4": Price(input=3.00, cached_input=0.30, output=15.00),
    "claude-3-7-sonnet": Price(input=3.00, cached_input=0.30, output=15.00),
    "claude-haiku-4-5": Price(input=1.00, cached_input=0.10, output=5.00),
    "claude-3-5-haiku": Price(input=0.80, cached_input=0.08, output=4.00),
    "claude-3-haiku": Price(input=0.25, cached_input=0.03, output=1.25),
}


def cost(model: str, settings: Settings, input_tokens: int, cached: int, output: int) -> Cost | None:
    """The estimated cost of the usage, or None when no price matches the model. `cached` is
    priced apart from `input_tokens`, as Anthropic counts cache reads (the runner records none
    today: a Message's cache_read_input_tokens are not kept)."""
    found = longest_prefix(settings.anthropic_prices, model) or longest_prefix(PRICES, model)
    if found is None:
        return None
    key, price = found
    cached_price = price.input if price.cached_input is None else price.cached_input
    standard = (input_tokens * price.input + cached * cached_price + output * price.output) / 1_000_000
    batch = standard * (1 - settings.anthropic_batch_discount)
    return Cost(standard, batch, standard - batch, key)
