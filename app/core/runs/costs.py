"""What usage on a batch API cost, priced from its backend kind's table (OpenAI's or
Anthropic's); None for usage that ran on an inference server, or that has no tokens yet."""

from __future__ import annotations

from app.core.rules import routing
from app.core.runs.anthropic import prices as anthropic_prices
from app.core.runs.openai import tables as openai_tables
from app.db.models import Batch
from app.ground.config import Settings


def usage_cost(
    settings: Settings, backend: str, model: str, input_tokens: int, cached: int, output: int
) -> openai_tables.Cost | None:
    """The estimated cost and saving of `model`'s tokens on `backend`."""
    spec = routing.spec_of(settings, backend)
    if spec is None or not spec.runs_batches or not (input_tokens or output):
        return None
    price = anthropic_prices.cost if spec.kind == "anthropic-batch" else openai_tables.cost
    return price(model, settings, input_tokens, cached, output)


def batch_cost(batch: Batch, settings: Settings) -> openai_tables.Cost | None:
    """The estimated cost and saving of a batch's usage so far."""
    return usage_cost(
        settings, batch.backend, batch.model, batch.input_tokens, batch.cached_tokens, batch.output_tokens
    )
