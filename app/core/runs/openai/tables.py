"""What OpenAI publishes per model, as defaults the operator can override: batch queue limits
(enqueued tokens) and synchronous prices. Lookups go by the longest matching model prefix, so
`gpt-4o` covers `gpt-4o-2024-08-06` while `gpt-4o-mini` keeps its own entry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from app.core.rules import routing
from app.db.models import Batch
from app.ground.config import Price, Settings

T = TypeVar("T")

# OpenAI's published Tier 1 batch queue limits (input tokens enqueued at once, per model).
# Higher tiers allow far more: set OPENAI_TOKEN_LIMITS (or edit them in the UI) for yours.
BATCH_QUEUE_LIMITS: dict[str, int] = {
    "gpt-4o": 90_000,
    "gpt-4o-mini": 2_000_000,
    "gpt-4-turbo": 90_000,
    "gpt-4": 100_000,
    "gpt-3.5-turbo": 2_000_000,
    "o1": 90_000,
    "o1-mini": 2_000_000,
    "text-embedding-3-small": 3_000_000,
    "text-embedding-3-large": 3_000_000,
    "text-embedding-ada-002": 3_000_000,
}

# Synchronous list prices in US dollars per million tokens (standard tier); the batch price is
# OPENAI_BATCH_DISCOUNT off these. Extend or correct them with OPENAI_PRICES.
PRICES: dict[str, Price] = {
    "gpt-4o": Price(input=2.50, cached_input=1.25, output=10.00),
    "gpt-4o-mini": Price(input=0.15, cached_input=0.075, output=0.60),
    "gpt-4.1": Price(input=2.00, cached_input=0.50, output=8.00),
    "gpt-4.1-mini": Price(input=0.40, cached_input=0.10, output=1.60),
    "gpt-4.1-nano": Price(input=0.10, cached_input=0.025, output=0.40),
    "o3": Price(input=2.00, cached_input=0.50, output=8.00),
    "o4-mini": Price(input=1.10, cached_input=0.275, output=4.40),
    "text-embedding-3-small": Price(input=0.02),
    "text-embedding-3-large": Price(input=0.13),
}


def longest_prefix(table: Mapping[str, T], model: str) -> tuple[str, T] | None:
    """The entry whose key is the longest prefix of `model`, or None."""
    matches = [key for key in table if model.startswith(key)]
    if not matches:
        return None
    key = max(matches, key=len)
    return key, table[key]


def token_limit(model: str, settings: Settings) -> tuple[int, str]:
    """The model's enqueued-token limit and where it came from (shown when a batch waits)."""
    if found := longest_prefix(settings.openai_token_limits, model):
        return found[1], f"operator limit for {found[0]}*"
    if found := longest_prefix(BATCH_QUEUE_LIMITS, model):
        return found[1], f"OpenAI Tier 1 limit for {found[0]}*"
    return settings.openai_token_limit_fallback, "fallback limit"


@dataclass(frozen=True, slots=True)
class Cost:
    """What a batch's tokens cost at synchronous prices, at batch prices, and the difference."""

    synchronous: float
    batch: float
    saving: float
    priced_as: str


def cost(model: str, settings: Settings, input_tokens: int, cached: int, output: int) -> Cost | None:
    """The estimated cost of the usage, or None when no price table entry matches the model."""
    found = longest_prefix(settings.openai_prices, model) or longest_prefix(PRICES, model)
    if found is None:
        return None
    key, price = found
    cached = min(cached, input_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    synchronous = (
        (input_tokens - cached) * price.input + cached * cached_price + output * price.output
    ) / 1_000_000
    batch = synchronous * (1 - settings.openai_batch_discount)
    return Cost(synchronous, batch, synchronous - batch, key)


def batch_cost(batch: Batch, settings: Settings) -> Cost | None:
    """The estimated cost and saving of an OpenAI batch's usage so far (None for other backends)."""
    spec = routing.spec_of(settings, batch.backend)
    if spec is None or spec.kind != "openai-batch" or not (batch.input_tokens or batch.output_tokens):
        return None
    return cost(batch.model, settings, batch.input_tokens, batch.cached_tokens, batch.output_tokens)
