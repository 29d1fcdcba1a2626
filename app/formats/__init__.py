"""Pure format translation between the APIs Batchgate speaks (Anthropic Messages, OpenAI chat)."""
