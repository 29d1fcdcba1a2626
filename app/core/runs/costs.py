"""What a remote batch's usage cost, priced from its backend kind's table (OpenAI's or
Anthropic's); None for a batch that ran on an inference server or has no usage yet."""

from __future__ import annotations

from app.core.rules import routing
from app.core.runs.anthropic import prices as anthropic_prices
from app.core.runs.openai import tables as openai_tables
from app.db.models import Batch
from app.ground.config import Settings


def batch_cost(batch: Batch, settings: Settings) -> openai_tables.Cost | None:
    """The estimated cost and saving of a batch's usage so far."""
    spec = routing.spec_of(settings, batch.backend)
    if spec is None or not spec.runs_batches or not (batch.input_tokens or batch.output_tokens):
        return None
    price = anthropic_prices.cost if spec.kind == "anthropic-batch" else openai_tables.cost
    return price(batch.model, settings, batch.input_tokens, batch.cached_tokens, batch.output_tokens)
