"""Anthropic batches are priced at half Anthropic's standard price, from a table the operator can
override by model prefix (ANTHROPIC_PRICES); batches that ran here have no price."""

from __future__ import annotations

from pathlib import Path

from app.core.runs import costs
from app.ground.config import Settings
from testkit import new_batch


def test_anthropic_batches_are_priced_at_half_the_standard_price(tmp_path: Path) -> None:
    backends = tmp_path / "backends.toml"
    backends.write_text('[backends.anthropic]\nkind = "anthropic-batch"\nmodels = ["claude-*"]\n')
    settings = Settings(_env_file=None, backends_file=str(backends))  # type: ignore[call-arg]
    batch = new_batch(
        backend="anthropic", model="claude-sonnet-4-5", input_tokens=1_000_000, output_tokens=100_000
    )
    batch.cached_tokens = 0
    found = costs.batch_cost(batch, settings)
    assert found is not None and found.priced_as == "claude-sonnet-4"
    assert (found.synchronous, found.batch) == (4.5, 2.25)
    prices = {"claude-sonnet-4-5": {"input": 1, "output": 10}}
    edited = Settings(_env_file=None, backends_file=str(backends), anthropic_prices=prices)  # type: ignore[call-arg]
    assert costs.batch_cost(batch, edited).batch == 1.0  # type: ignore[union-attr]
    assert costs.batch_cost(new_batch(backend="local", input_tokens=5), settings) is None
