"""How Batchgate reaches the network: pooled HTTP clients and retries, the SSRF guard and
allow-lists, RabbitMQ connections. Knows nothing of the core or the database."""
